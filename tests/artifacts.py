"""What a user sees on a flow run in the Prefect UI: its artifacts, read back from the API."""

from __future__ import annotations

import json


def flow_artifact(flow_run_id, key: str):
    """The data of the one artifact `key` of a flow run (a table's rows, a markdown text)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId,
                                                ArtifactFilterKey)

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(artifacts) == 1, f"{len(artifacts)} artifacts {key!r} on flow run {flow_run_id}"
    data = artifacts[0].data
    if artifacts[0].type == "table" and isinstance(data, str):
        return json.loads(data)
    return data
