"""A scripted OAuth token endpoint for httpx.MockTransport, shared by the OAuth unit tests."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import httpx

from connectors.retry import RetryPolicy

NO_SLEEP = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, sleep=lambda s: None)


class TokenEndpoint:
    """Answers token requests from a script; records the forms it received."""

    def __init__(self, *answers: tuple[int, dict]) -> None:
        self.answers = list(answers)
        self.forms: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(dict(parse_qsl(request.content.decode())))
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return httpx.Response(status, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
