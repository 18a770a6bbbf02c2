"""Schemathesis checks of our own (loaded through SCHEMATHESIS_HOOKS by schemathesis.sh)."""

import json

import schemathesis


@schemathesis.check
def client_errors_are_problem_json(ctx, response, case):
    """Every 4xx (and 5xx) is an RFC 9457 problem: `application/problem+json` with a JSON
    object whose `status` matches the response and whose `title` and `detail` are strings."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/problem+json":
        raise AssertionError(
            f"{response.status_code} answered with Content-Type {content_type!r}, "
            "not application/problem+json"
        )
    try:
        body = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"the problem body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise AssertionError("the problem body is not a JSON object")
    if body.get("status") != response.status_code:
        raise AssertionError(
            f"problem status {body.get('status')!r} differs from {response.status_code}"
        )
    for key in ("type", "title", "detail"):
        if not isinstance(body.get(key), str):
            raise AssertionError(f"problem member {key!r} is missing or not a string")
    return None
