"""Rules of Flowdeck's API that a JSON Schema cannot state, told to schemathesis.

scripts/api-check.sh loads this module (SCHEMATHESIS_HOOKS). Each filter drops generated
bodies that break a rule the server checks beyond the schema, so that "positive" data
really is valid; the server still refuses such bodies with 422, which the integration
tests check.
"""

from datetime import datetime, timezone

import uuid

import schemathesis


def _future(value):
    """True when `value` is absent or an RFC 3339 time after now."""
    if value is None:
        return True
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return True  # not a time at all: negative data, left for the server to refuse
    if when.tzinfo is None:
        return True
    return when > datetime.now(timezone.utc)


@schemathesis.hook
def filter_body(context, body):
    operation = context.operation
    if operation is None or not isinstance(body, dict):
        return True
    route = (operation.method.upper(), operation.path)
    # A key cannot be made already expired.
    if route in {("POST", "/api/api_keys/"), ("POST", "/api/api_keys/{id}/rotate")}:
        return _future(body.get("expires_at"))
    return True


@schemathesis.hook
def map_headers(context, headers):
    """Each generated Idempotency-Key is made unique.

    Reusing a key for a different request is refused (422) by design; the fuzzer cannot
    know which keys it used before, so two of its requests never share one. Reuse is tested
    by the integration tests.
    """
    if not headers or "Idempotency-Key" not in headers:
        return headers
    key = str(headers["Idempotency-Key"])
    if 1 <= len(key) <= 200 and all(0x21 <= ord(c) <= 0x7E for c in key):
        headers["Idempotency-Key"] = f"{key}-{uuid.uuid4().hex}"
    return headers
