"""Cache policies: a task is reused across runs when its code and its inputs' content are unchanged.

Records passed between tasks carry the sha256 of the files they point to, so hashing the inputs
hashes content. Only the download task sees raw locations, and its key hashes local files itself.
Results persist (Prefect caches only persisted results) under PREFECT_HOME, which the CLI sets to
`<home>/prefect`.
"""

from __future__ import annotations

from prefect.cache_policies import INPUTS, TASK_SOURCE

BY_CONTENT = dict(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
