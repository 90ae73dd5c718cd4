"""Fetching an image URL for a template placeholder over HTTP, treating the answer as hostile input."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from core.errors import Invalid
from core.templates.images import MAX_IMAGE_BYTES, ImageValue, _check_host, validate_image


def fetch_image(url: str, *, allow_loopback: bool = False, max_bytes: int = MAX_IMAGE_BYTES,
                timeout: float = 10.0) -> ImageValue:
    """GET an image URL as hostile input: no redirects, a byte cap, content type and Pillow checks."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise Invalid(f"image URL {url[:100]!r} must be http(s) with a host")
    _check_host(parts.hostname, allow_loopback)
    try:
        with httpx.Client(follow_redirects=False, timeout=timeout) as client, client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise Invalid(f"image URL answered HTTP {resp.status_code}; expected 200 with an image "
                              "(redirects are not followed)")
            ctype = resp.headers.get("content-type", "")
            if not ctype.lower().startswith("image/"):
                raise Invalid(f"image URL returned {ctype or 'no content type'}, not an image")
            length = resp.headers.get("content-length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise Invalid(f"image URL announces {int(length) / 1048576:.1f} MB; the limit is "
                              f"{max_bytes / 1048576:.0f} MB")
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf.extend(chunk)
                if len(buf) > max_bytes:
                    raise Invalid(f"image URL sent more than {max_bytes / 1048576:.0f} MB; stopped reading")
    except httpx.HTTPError as e:
        raise Invalid(f"could not fetch the image URL ({type(e).__name__}: {e})") from e
    return validate_image(bytes(buf), declared_type=ctype, source=f"the image at {url[:100]}", max_bytes=max_bytes)
