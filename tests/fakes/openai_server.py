"""A local OpenAI-compatible HTTP server for tests: /v1/embeddings and /v1/chat/completions on 127.0.0.1.

Driven by the real openai SDK (OpenAI with ``base_url`` and AzureOpenAI with ``azure_endpoint``:
``/openai/deployments/<name>/...`` paths are served too). Faults are switched on per test:

    with OpenAIFakeServer(api_key="sk-test") as srv:
        srv.rate_limit_next(2, retry_after=0.01)      # the next two requests answer 429 + Retry-After
        srv.fail_next(1, status=500)                  # the next request answers 500
        srv.fail_inputs_containing("POISON")          # every embeddings request holding this text: 500
        srv.chat_responder = lambda body: "hello"     # what chat completions answer (str or full dict)
        srv.requests                                  # what was asked: [(path, json body), ...]

Embeddings are deterministic bag-of-words vectors (hashed word counts), so texts sharing words
are close: retrieval tests can assert on ranking without a real model. ``word_vectors=False`` gives
each text a random unit vector seeded by its hash instead, a fraction of the CPU per text, for
benchmarks that stand the server in for a remote API whose compute happens elsewhere.

Run on its own (benchmarks put it in another process, as a remote API would be):

    python -m tests.fakes.openai_server --latency 0.25 --random-vectors   # prints "port <n>", serves until stdin closes
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+")
NATIVE_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
ChatResponder = Callable[[dict[str, Any]], "str | dict[str, Any]"]


def fake_embedding(text: str, dim: int) -> np.ndarray:
    """Unit vector of hashed word counts (plus a small text-specific component so no two are equal)."""
    v = np.zeros(dim, dtype=np.float32)
    for w in _WORD.findall(text.lower()):
        h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        v[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    v += np.random.default_rng(seed).standard_normal(dim).astype(np.float32) * 0.05
    n = float(np.linalg.norm(v))
    return v / n if n else v


def random_embedding(text: str, dim: int) -> np.ndarray:
    """A unit vector seeded by the text's hash: deterministic, cheap, and unrelated to the text's meaning."""
    seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.float32(np.linalg.norm(v))


def _default_chat(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last.get("content", "")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return f"(fake) {str(content)[:200]}"


class OpenAIFakeServer:
    """Threaded HTTP server on 127.0.0.1 speaking the OpenAI embeddings and chat shapes."""

    def __init__(self, api_key: str | None = "sk-test", default_dim: int = 64, *, latency_seconds: float = 0.0,
                 word_vectors: bool = True, keep_requests: bool = True) -> None:
        self.api_key = api_key
        self.default_dim = default_dim
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.keep_requests = keep_requests  # off for long benchmark runs: the bodies would pile up
        self.chat_responder: ChatResponder = _default_chat
        self.latency_seconds = latency_seconds  # slept per request before answering, as a remote API takes
        self.embed_text = fake_embedding if word_vectors else random_embedding
        self._lock = threading.Lock()
        self._rate_limited = 0
        self._retry_after: float | None = None
        self._failures: list[int] = []
        self._poison: str | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # fault switches ---------------------------------------------------------------------
    def rate_limit_next(self, n: int, retry_after: float | None = 0.01) -> None:
        with self._lock:
            self._rate_limited = n
            self._retry_after = retry_after

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    def fail_inputs_containing(self, marker: str | None) -> None:
        with self._lock:
            self._poison = marker

    def embedding_requests(self) -> list[dict[str, Any]]:
        return [b for p, b in self.requests if p.endswith("/embeddings")]

    # lifecycle --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OpenAIFakeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access logs
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openai-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIFakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # request handling -------------------------------------------------------------------
    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, status: int, message: str, kind: str,
               headers: dict[str, str] | None = None) -> None:
        self._send(h, status, {"error": {"message": message, "type": kind, "param": None, "code": kind}}, headers)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        try:
            body = json.loads(h.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._error(h, 400, "request body is not JSON", "invalid_request_error")
            return
        path = h.path.split("?", 1)[0]
        if self.keep_requests:
            with self._lock:
                self.requests.append((path, body))
        if self.api_key is not None:
            auth = h.headers.get("Authorization", "")
            key = auth.removeprefix("Bearer ").strip() or h.headers.get("api-key", "")
            if key != self.api_key:
                self._error(h, 401, "Incorrect API key provided.", "invalid_api_key")
                return
        if self.latency_seconds:
            time.sleep(self.latency_seconds)
        with self._lock:
            if self._rate_limited > 0:
                self._rate_limited -= 1
                hdrs = {"Retry-After": str(self._retry_after)} if self._retry_after is not None else {}
                self._error(h, 429, "Rate limit reached for requests", "rate_limit_exceeded", hdrs)
                return
            status = self._failures.pop(0) if self._failures else None
        if status is not None:
            self._error(h, status, "The server had an error while processing your request.", "server_error")
            return
        if path.endswith("/embeddings"):
            self._embeddings(h, body)
        elif path.endswith("/chat/completions"):
            self._chat(h, body)
        else:
            self._error(h, 404, f"unknown path {path}", "not_found")

    def _embeddings(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        raw = body.get("input")
        inputs: list[str]
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            inputs = list(raw)
        elif isinstance(raw, list):  # token arrays: embed their string form
            inputs = [" ".join(map(str, x)) if isinstance(x, list) else str(x) for x in raw]
        else:
            self._error(h, 400, "'input' must be a string or an array", "invalid_request_error")
            return
        if not inputs or any(x == "" for x in inputs):
            self._error(h, 400, "'input' cannot be an empty string", "invalid_request_error")
            return
        if len(inputs) > 2048:
            self._error(h, 400, "'input' has more than 2048 items", "invalid_request_error")
            return
        poison = self._poison
        if poison and any(poison in x for x in inputs):
            self._error(h, 500, "The server had an error while processing your request.", "server_error")
            return
        model = str(body.get("model", ""))
        dim = int(body.get("dimensions") or NATIVE_DIMS.get(model, self.default_dim))
        as_b64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vec = self.embed_text(text, dim)
            emb: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode() if as_b64 else vec.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(_WORD.findall(x)) for x in inputs)
        self._send(h, 200, {"object": "list", "data": data, "model": model,
                            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _chat(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        answer = self.chat_responder(body)
        if isinstance(answer, dict):
            self._send(h, 200, answer)
            return
        prompt_tokens = sum(len(_WORD.findall(str(m.get("content", "")))) for m in body.get("messages") or [])
        completion_tokens = len(_WORD.findall(answer))
        created = int(time.time())
        model = str(body.get("model", "fake-model"))
        if body.get("stream"):
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Connection", "close")
            h.end_headers()
            words = re.findall(r"\S+\s*", answer) or [""]
            for i, w in enumerate(words):
                delta = {"role": "assistant", "content": w} if i == 0 else {"content": w}
                chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                         "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                h.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            end = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            h.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            h.wfile.flush()
            h.close_connection = True
            return
        self._send(h, 200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


def main() -> None:
    """Serve on 127.0.0.1 in this process until stdin closes; the first line printed is ``port <n>``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-key", default="sk-test")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept per request")
    parser.add_argument("--random-vectors", action="store_true", help="hash-seeded random vectors (cheap)")
    args = parser.parse_args()
    server = OpenAIFakeServer(args.api_key, latency_seconds=args.latency, word_vectors=not args.random_vectors,
                              keep_requests=False).start()
    print(f"port {server.port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
