"""Great Expectations, imported on first use and kept quiet: no progress bars, no INFO chatter.

GX takes seconds to import, so nothing here runs at import time; each validation makes its own
in-memory context and drops it afterwards.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any


def import_gx() -> ModuleType:
    """`great_expectations`, imported with its INFO logging left below WARNING.

    A caller that set a level on the "great_expectations" logger keeps it.
    """
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)  # GX logs each registration and store at INFO
    import great_expectations as gx

    # This module sets its own logger to INFO when imported; let it inherit the level above.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.NOTSET)
    return gx


def ephemeral_context() -> Any:
    """A fresh in-memory GX context: no files, no data docs, no progress bars, analytics off.

    (GX 1.24 no longer sends analytics at all; the flag is set so a future version stays off too.)
    """
    gx = import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)
