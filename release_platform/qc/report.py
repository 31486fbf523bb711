"""A session's QC page and thumbnails: the figures of :mod:`release_platform.qc.figures` as one self-contained
HTML file (images embedded as base64 ``data:`` URIs, so it opens anywhere and can be attached to a ticket) and
as small PNG thumbnails in a Markdown snippet, the form the Dagster UI renders as pictures in an asset's
materialization metadata.

Thumbnails are made with Pillow (matplotlib's own image dependency): the figure scaled to
:data:`THUMBNAIL_WIDTH` pixels wide, re-encoded as an optimized PNG.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from release_platform.atomic import atomic_path
from release_platform.qc.figures import Picture

__all__ = ["THUMBNAIL_WIDTH", "thumbnail_png", "data_uri", "thumbnails_markdown", "write_html_page", "figure_section"]

THUMBNAIL_WIDTH = 240


def thumbnail_png(path: str | os.PathLike, width: int = THUMBNAIL_WIDTH) -> bytes:
    """The PNG at ``path`` scaled to ``width`` pixels wide (aspect kept), as PNG bytes."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        height = max(1, round(im.height * width / im.width))
        small = im.resize((width, height), Image.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnails_markdown(groups: Mapping[str, Sequence[Picture]], width: int = THUMBNAIL_WIDTH) -> str:
    """Markdown with one heading per group (e.g. an imaging plane) and its figures as embedded thumbnails."""
    lines = []
    for group, pictures in groups.items():
        if group:
            lines.append(f"**{group}**\n")
        for pic in pictures:
            alt = f"{pic.name}: {pic.caption}".replace("]", ")").replace("[", "(")
            lines.append(f"![{alt}]({data_uri(thumbnail_png(pic.path, width))})")
        lines.append("")
    return "\n".join(lines)


def _img(path: str | os.PathLike) -> str:
    return data_uri(Path(path).read_bytes())


def figure_section(heading: str, pictures: Iterable[Picture]) -> str:
    """HTML of one group of figures, each full size with its caption."""
    items = "".join(
        f'<figure><img src="{_img(p.path)}" alt="{html.escape(p.name)}" width="{p.width}">'
        f"<figcaption>{html.escape(p.name)}: {html.escape(p.caption)}</figcaption></figure>"
        for p in pictures
    )
    return f"<section><h2>{html.escape(heading)}</h2>{items}</section>"


STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}figure{display:inline-block;margin:0 1em 1em 0;"
         "vertical-align:top}img{max-width:100%;border:1px solid #ddd}figcaption{font-size:0.85em;color:#555}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.6em;text-align:left}"
         "th{background:#f3f3f3}")


def write_html_page(path: str | os.PathLike, title: str, body: str) -> Path:
    """Write one self-contained HTML page atomically."""
    path = Path(path)
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
