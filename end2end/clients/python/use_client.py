"""Uses the Python client openapi-python-client generated from Flowdeck's live document, as a
CI job would: creates a pipeline, triggers it twice with one Idempotency-Key and gets one
run, reads the run, filters runs, and reads a refusal (422) as a typed error.

Usage: FLOWDECK_URL=… FLOWDECK_API_KEY=… python use_client.py GENERATED_DIR
GENERATED_DIR holds the package `flowdeck_client` (generated with --meta none).
"""

import os
import sys
import uuid

sys.path.insert(0, sys.argv[1])

from flowdeck_client import AuthenticatedClient  # noqa: E402
from flowdeck_client.api.pipelines import create_pipeline  # noqa: E402
from flowdeck_client.api.runs import create_run, filter_runs, get_run  # noqa: E402
from flowdeck_client.models import (  # noqa: E402
    ErrorBody,
    NewPipeline,
    NewPipelineDefaultParametersType0,
    Run,
    RunFilter,
    RunSort,
    TriggerRequest,
    TriggerRequestParametersType0,
)


def parameters(cls, values):
    """A free-form parameters object of the generated type `cls`."""
    return cls.from_dict(values)


client = AuthenticatedClient(base_url=os.environ["FLOWDECK_URL"], token=os.environ["FLOWDECK_API_KEY"])
suffix = uuid.uuid4().hex[:8]

made = create_pipeline.sync_detailed(
    client=client,
    body=NewPipeline(
        name=f"Python client {suffix}",
        tags=["clients"],
        default_parameters=parameters(NewPipelineDefaultParametersType0, {"rows": 10, "label": "py"}),
    ),
)
assert made.status_code == 201, (made.status_code, made.content)
pipeline = made.parsed
assert pipeline.name == f"Python client {suffix}", pipeline

key = f"python-{suffix}"
body = TriggerRequest(parameters=parameters(TriggerRequestParametersType0, {"rows": 20, "nested": {"a": [1, "b"]}}))
first = create_run.sync_detailed(client=client, id=pipeline.id, body=body, idempotency_key=key)
again = create_run.sync_detailed(client=client, id=pipeline.id, body=body, idempotency_key=key)
assert first.status_code == 202 and again.status_code == 202, (first.content, again.content)
assert isinstance(first.parsed, Run) and isinstance(again.parsed, Run)
assert first.parsed.id == again.parsed.id, "one Idempotency-Key made two runs"
run = get_run.sync(client=client, id=first.parsed.id)
assert isinstance(run, Run), run
assert run.parameters == {"rows": 20, "label": "py", "nested": {"a": [1, "b"]}}, run.parameters
assert [s.name for s in run.stages] == ["Data Generation", "Data Ingestion", "Spark Processing",
                                        "DBT Transformation", "Data Export"], run.stages

listed = filter_runs.sync(client=client, body=RunFilter(sort=RunSort.CREATED_ASC, limit=50))
assert isinstance(listed, list) and run.id in [r.id for r in listed], listed

# The same key with another body: 422, read as the typed error body.
other = TriggerRequest(parameters=parameters(TriggerRequestParametersType0, {"rows": 21}))
refused = create_run.sync_detailed(client=client, id=pipeline.id, body=other, idempotency_key=key)
assert refused.status_code == 422, refused.status_code
assert isinstance(refused.parsed, ErrorBody), refused.parsed
assert refused.parsed.code == "invalid" and refused.parsed.field == "Idempotency-Key", refused.parsed
print(f"python client: pipeline {pipeline.id}, run {run.id} once for two triggers, "
      f"{len(listed)} runs filtered, 422 read as ErrorBody(field={refused.parsed.field!r})")
