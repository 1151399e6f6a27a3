"""The demo's `index.html`: one static page, images beside it (relative links), no external
resources. When every image has loaded, a script sets `data-images-loaded="N/N"` on <body> (and
"k/N" with k < N when some failed), which `scripts/check_demo_page.py` reads from Chromium's DOM."""
from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patchprune.data.io import atomic_path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; background: #fafafa; color: #222; max-width: 1400px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 26px; }
p, li { font-size: 14px; line-height: 1.45; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; } th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 10px 0 18px 0; } img { max-width: 100%; border: 1px solid #ddd; background: #18181c; }
figcaption { font-size: 13px; color: #555; margin-top: 4px; }
code { background: #eee; padding: 1px 4px; }
"""

LOAD_FLAG = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
});
"""


@dataclass
class Figure:
    """An image beside the page, with its section heading and caption."""

    file: str
    heading: str
    caption: str


def render_page(title: str, intro: Sequence[str], table_html: str, table_note: str, figures: Sequence[Figure],
                notes: Sequence[str]) -> str:
    """The page's HTML (paragraph texts are escaped; table_html is trusted, built by `table.html_table`)."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
             f"<style>{STYLE}</style>", f"<script>{LOAD_FLAG}</script>", "</head><body>", f"<h1>{esc(title)}</h1>"]
    parts += [f"<p>{esc(p)}</p>" for p in intro]
    parts += ["<h2>Results</h2>", table_html, f"<p>{esc(table_note)}</p>"]
    for fig in figures:
        parts += [f"<h2>{esc(fig.heading)}</h2>", "<figure>", f'<img src="{esc(fig.file)}" alt="{esc(fig.heading)}">',
                  f"<figcaption>{esc(fig.caption)}</figcaption>", "</figure>"]
    if notes:
        parts += ["<h2>How these numbers were made</h2>", "<ul>"] + [f"<li>{esc(n)}</li>" for n in notes] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_page(path: str | Path, page: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
