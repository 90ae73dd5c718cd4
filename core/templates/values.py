"""The typed values a renderer receives for placeholders (text, list, table, image, chart)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TableValue:
    """Rows of already formatted cells; ``columns`` are header labels (used when a table is created)."""

    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class ChartValue:
    """A category chart: one value per category in every series."""

    categories: list[str]
    series: list[tuple[str, list[float]]]
    title: str | None = None
    kind: str = "column"  # column | bar | line | pie


@dataclass(frozen=True)
class ImageValue:
    """A checked image (Pillow verified) with its pixel size, so it can be fitted into a box."""

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif"}.get(self.format, "image/png")

    def fit(self, box_w: int, box_h: int) -> tuple[int, int]:
        """The largest size with this image's aspect ratio that fits the box (EMU or any unit)."""
        if self.width <= 0 or self.height <= 0 or box_w <= 0 or box_h <= 0:
            return box_w, box_h
        scale = min(box_w / self.width, box_h / self.height)
        return max(1, int(self.width * scale)), max(1, int(self.height * scale))


RenderValue = str | list[str] | TableValue | ChartValue | ImageValue


def dump_value(value: RenderValue, store_image: Callable[[ImageValue], str]) -> dict[str, Any]:
    """JSON form of a render value, so a document can be rendered again with one field changed.
    Images are stored once elsewhere (``store_image`` returns a ``blob:`` reference)."""
    if isinstance(value, str):
        return {"t": "text", "v": value}
    if isinstance(value, list):
        return {"t": "list", "v": list(value)}
    if isinstance(value, TableValue):
        return {"t": "table", "columns": value.columns, "rows": value.rows}
    if isinstance(value, ChartValue):
        return {"t": "chart", "categories": value.categories, "series": [[n, v] for n, v in value.series],
                "title": value.title, "kind": value.kind}
    return {"t": "image", "ref": store_image(value), "format": value.format, "width": value.width,
            "height": value.height}


def load_value(data: dict[str, Any], read_image: Callable[[str], bytes]) -> RenderValue:
    t = data.get("t")
    if t == "text":
        return str(data["v"])
    if t == "list":
        return [str(x) for x in data["v"]]
    if t == "table":
        return TableValue(columns=list(data["columns"]), rows=[list(r) for r in data["rows"]])
    if t == "chart":
        return ChartValue(categories=list(data["categories"]), series=[(n, list(v)) for n, v in data["series"]],
                          title=data.get("title"), kind=data.get("kind", "column"))
    if t == "image":
        return ImageValue(data=read_image(data["ref"]), format=data["format"], width=int(data["width"]),
                          height=int(data["height"]))
    raise ValueError(f"unknown stored value type {t!r}")
