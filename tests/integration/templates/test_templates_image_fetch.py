"""Image URLs are hostile input: a loopback server serves good, fake, redirecting and oversized images."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.adapters.image_fetch import fetch_image
from core.errors import Invalid
from core.templates.images import ImageLoader
from tests.unit.templates.tpl_builders import png

GOOD = png(30, 10)
ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/ok.png": (200, {"Content-Type": "image/png"}, GOOD),
    "/page.html": (200, {"Content-Type": "text/html"}, b"<html><body>not an image</body></html>"),
    "/fake.png": (200, {"Content-Type": "image/png"}, b"<html><body>pretending</body></html>"),
    "/mislabelled.jpg": (200, {"Content-Type": "image/jpeg"}, GOOD),
    "/redirect": (302, {"Location": "/ok.png"}, b""),
    "/big.png": (200, {"Content-Type": "image/png"}, GOOD + b"\0" * 300_000),
    "/missing": (404, {"Content-Type": "text/plain"}, b"nope"),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        status, headers, body = ROUTES.get(self.path, (404, {}, b""))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_good_image_is_fetched(base_url: str) -> None:
    img = fetch_image(base_url + "/ok.png", allow_loopback=True)
    assert img.data == GOOD and (img.width, img.height) == (30, 10)


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/page.html", "text/html, not an image"),
        ("/fake.png", "not a readable image"),
        ("/mislabelled.jpg", "served as image/jpeg but the bytes are PNG"),
        ("/redirect", "HTTP 302"),
        ("/missing", "HTTP 404"),
    ],
)
def test_url_that_is_not_a_good_image_is_refused(base_url: str, path: str, needle: str) -> None:
    with pytest.raises(Invalid, match=needle):
        fetch_image(base_url + path, allow_loopback=True)


def test_size_cap_applies(base_url: str) -> None:
    with pytest.raises(Invalid, match="limit"):
        fetch_image(base_url + "/big.png", allow_loopback=True, max_bytes=100_000)


def test_loopback_and_private_hosts_are_refused_by_default(base_url: str) -> None:
    with pytest.raises(Invalid, match="private or local address"):
        fetch_image(base_url + "/ok.png")
    with pytest.raises(Invalid, match="http"):
        fetch_image("file:///etc/passwd")


def test_loader_only_fetches_when_allowed(base_url: str) -> None:
    with pytest.raises(Invalid, match="turned off"):
        ImageLoader()(base_url + "/ok.png")
    assert ImageLoader(allow_remote=True, allow_loopback=True)(base_url + "/ok.png").data == GOOD
