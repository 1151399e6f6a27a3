"""The demo's result table (AP / PKR / GMACs / FPS / speed-up per model) as text and as HTML.

A row is a dict: model, AP, AP50 (None without ground truth), pkr, gmacs {backbone, total},
fps {backbone, model}. Speed-ups are FPS ratios against the first row (the dense model), measured
in the same process one model after the other, batch 1 streaming.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

COLUMNS = ("model", "AP", "AP50", "PKR", "GMACs backbone", "GMACs total", "FPS backbone", "FPS model",
           "speed-up backbone", "speed-up model")


def cells(row: dict[str, Any], dense: dict[str, Any]) -> list[str]:
    """The row's formatted cells (AP in %, '-' when not measured)."""
    def pct(v: Any) -> str:
        return "-" if v is None or v < 0 else f"{100 * v:.1f}"

    g, f, fd = row["gmacs"], row["fps"], dense["fps"]
    return [row["model"], pct(row.get("AP")), pct(row.get("AP50")), f"{row['pkr']:.2f}", f"{g['backbone']:.3f}",
            f"{g['total']:.3f}", f"{f['backbone']:.1f}", f"{f['model']:.1f}",
            f"{f['backbone'] / fd['backbone']:.2f}x", f"{f['model'] / fd['model']:.2f}x"]


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    """Fixed-width table for the terminal."""
    body = [list(COLUMNS)] + [cells(r, rows[0]) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    fmt = lambda line: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
    return "\n".join([fmt(body[0]), "  ".join("-" * w for w in widths)] + [fmt(line) for line in body[1:]])


def html_table(rows: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r, rows[0])) + "</tr>" for r in rows)
    return f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
