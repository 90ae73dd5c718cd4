"""Images given to image placeholders are hostile input: size-capped, content-type checked and Pillow-verified.

A value can be a ``blob:<container>/<name>`` reference (the tenant's own blob store), a ``data:`` URL,
raw bytes, or an http(s) URL. Remote fetching is off unless the caller allows it; when allowed it
refuses private and loopback addresses (unless explicitly allowed, as tests do), never follows
redirects, streams with a byte cap, and requires an ``image/*`` content type that matches the bytes.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from core.errors import Invalid
from core.templates.values import ImageValue

ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif"}
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000


def validate_image(data: bytes, *, declared_type: str | None = None, source: str = "the image",
                   max_bytes: int = MAX_IMAGE_BYTES) -> ImageValue:
    """Check bytes are a PNG, JPEG or GIF of sane size; return them with their pixel size."""
    if len(data) > max_bytes:
        raise Invalid(f"{source} is {len(data) / 1048576:.1f} MB; images are limited to {max_bytes / 1048576:.0f} MB")
    if not data:
        raise Invalid(f"{source} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                width, height = img.size
                img.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Invalid(f"{source} is not a readable image ({type(e).__name__}); use a PNG, JPEG or GIF") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise Invalid(f"{source} is a damaged image ({e}); use a PNG, JPEG or GIF") from e
    if fmt not in ALLOWED_FORMATS:
        raise Invalid(f"{source} is a {fmt or 'unknown'} image; use a PNG, JPEG or GIF")
    if width * height > MAX_PIXELS:
        raise Invalid(f"{source} is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels")
    if declared_type is not None:
        declared = declared_type.split(";")[0].strip().lower()
        if declared != ALLOWED_FORMATS[fmt] and not (declared == "image/jpg" and fmt == "JPEG"):
            raise Invalid(f"{source} was served as {declared or 'no content type'} but the bytes are {fmt}")
    return ImageValue(data=data, format=fmt, width=width, height=height)


def _check_host(host: str, allow_loopback: bool) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        raise Invalid(f"cannot resolve the image host {host!r}: {e}") from e
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if ip.is_loopback and allow_loopback:
            continue
        if not ip.is_global:
            raise Invalid(f"image host {host!r} resolves to a private or local address ({ip}); images are only "
                          "fetched from public hosts")


BlobReader = Callable[[str, str], bytes]


@dataclass
class ImageLoader:
    """Turns an image value (blob ref, data URL, bytes, URL) into a checked ``ImageValue``."""

    read_blob: BlobReader | None = None
    allow_remote: bool = False
    allow_loopback: bool = False
    max_bytes: int = MAX_IMAGE_BYTES

    def __call__(self, ref: object) -> ImageValue:
        if isinstance(ref, ImageValue):
            return ref
        if isinstance(ref, bytes | bytearray):
            return validate_image(bytes(ref), max_bytes=self.max_bytes)
        if not isinstance(ref, str) or not ref.strip():
            raise Invalid("an image value must be a blob reference, a data: URL or an http(s) URL")
        ref = ref.strip()
        if ref.startswith("blob:"):
            if self.read_blob is None:
                raise Invalid("blob image references need a blob store")
            container, _, name = ref[5:].partition("/")
            return validate_image(self.read_blob(container, name), source=f"blob {ref[5:]}", max_bytes=self.max_bytes)
        if ref.startswith("data:"):
            header, _, payload = ref.partition(",")
            if ";base64" not in header:
                raise Invalid("data: image URLs must be base64 encoded")
            if len(payload) > self.max_bytes * 4 // 3 + 8:
                raise Invalid(f"the data: image is over {self.max_bytes / 1048576:.0f} MB")
            try:
                raw = base64.b64decode(payload, validate=True)
            except ValueError as e:
                raise Invalid(f"the data: image is not valid base64 ({e})") from e
            return validate_image(raw, declared_type=header[5:].split(";")[0], source="the data: image",
                                  max_bytes=self.max_bytes)
        if ref.startswith(("http://", "https://")):
            if not self.allow_remote:
                raise Invalid("fetching images from URLs is turned off; upload the image to the template library")
            from core.adapters.image_fetch import fetch_image  # the HTTP client lives in an adapter

            return fetch_image(ref, allow_loopback=self.allow_loopback, max_bytes=self.max_bytes)
        raise Invalid(f"image value {ref[:60]!r} is not a blob: reference, data: URL or http(s) URL")
