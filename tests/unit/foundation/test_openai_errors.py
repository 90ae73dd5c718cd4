"""One mapping of openai SDK errors to Castiel errors, for the chat client and the embedder."""

from __future__ import annotations

import httpx
import openai
import pytest

from core.adapters.openai_errors import castiel_error
from core.errors import ConfigError, Invalid, RateLimited, TransientError

REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/embeddings")


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx.Response(status, headers=headers or {}, request=REQUEST,
                              json={"error": {"message": f"explained by the service ({status})"}})
    cls = {400: openai.BadRequestError, 401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
           404: openai.NotFoundError, 429: openai.RateLimitError, 500: openai.InternalServerError}.get(
        status, openai.APIStatusError)
    return cls(f"HTTP {status}", response=response, body={"error": {"message": f"explained by the service ({status})"}})


@pytest.mark.parametrize(("status", "kind", "says"), [
    (400, Invalid, "refused the request \\(400\\): explained by the service"),
    (401, ConfigError, "refused the API key \\(401\\).*; check KEY"),
    (403, ConfigError, "may not use m1 at the svc \\(403\\).*; check KEY"),
    (404, ConfigError, "'m1' not found at the svc \\(404\\).*; check KEY"),
    (500, TransientError, "the svc answered 500: explained by the service \\(500\\); try again"),
    (502, TransientError, "answered 502"),
])
def test_status_errors_map_to_what_a_person_or_a_retry_can_act_on(status: int, kind: type, says: str) -> None:
    mapped = castiel_error(status_error(status), "the svc", "m1", "; check KEY")
    assert isinstance(mapped, kind)
    with pytest.raises(kind, match=says):
        raise mapped


def test_rate_limits_carry_the_services_wait() -> None:
    for headers, wait in (({"retry-after-ms": "250"}, 0.25), ({"retry-after": "3"}, 3.0), ({}, None),
                          ({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, None)):
        mapped = castiel_error(status_error(429, headers), "the svc", "m1")
        assert isinstance(mapped, RateLimited) and mapped.retry_after == wait and "429" in mapped.message


def test_connection_problems_are_transient_and_other_errors_are_left_alone() -> None:
    assert isinstance(castiel_error(openai.APITimeoutError(request=REQUEST), "the svc", "m1"), TransientError)
    assert isinstance(castiel_error(openai.APIConnectionError(request=REQUEST), "the svc", "m1"), TransientError)
    assert castiel_error(openai.OpenAIError("something else"), "the svc", "m1") is None
