"""`patchprune segment`'s `index.html`: the video with its tracks, the patches each pruning stage
processed, the keep ratio per block and per frame, and a table of the tracks. Built while the video
streams (display-size pictures only, so a long video does not pile up full frames in memory) with the
demo page's parts (`patchprune.demo_page`)."""
from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchprune.demo_page.html import Figure, render_page, write_page
from patchprune.demo_page.pictures import (BACKGROUND, Shown, display_size, hstack, keep_ratio_plot, keep_tile,
                                           overlay_panel, save_gif, save_plot, stage_blocks, stage_label)

PAGE_FRAMES = 120  # frames in the page's animations (evenly spread over a longer video)
DISPLAY_SIDE = 320  # longer side of the overlay pictures, pixels
TILE_SIDE = 160  # longer side of a kept-patches tile


@dataclass
class TrackRow:
    """What the page's table says of one track."""

    category: str
    frames: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


class SegmentPage:
    """Collects, frame by frame, what the page shows; `write(out, notes)` renders it.

    frames: the video's frame count when known (None for a stream of unknown length: the first
    PAGE_FRAMES frames are pictured); grid: the backbone's patch grid; depth: its number of blocks."""

    def __init__(self, title: str, frames: int | None, grid: tuple[int, int], depth: int) -> None:
        self.title, self.grid, self.depth = title, grid, depth
        count = frames if frames is not None else PAGE_FRAMES
        self.pictured = set(np.linspace(0, count - 1, min(count, PAGE_FRAMES)).round().astype(int).tolist())
        self.overlays: list[np.ndarray] = []
        self.kept: list[np.ndarray] = []
        self.pkr: list[float] = []
        self.cuts: list[int] = []
        self.block_sums = np.zeros(depth)
        self.tracks: dict[int, TrackRow] = {}

    def add(self, t: int, frame: np.ndarray, shown: Sequence[Shown], keep: dict[int, np.ndarray], pkr: float,
            cut: bool) -> None:
        """Frame t (uint8 [H, W, 3]), its drawn tracks (id >= 1, label, score, bool mask [H, W]), the
        backbone's keep mask per block (bool [N]; empty when dense), its PKR and whether it starts a scene."""
        self.pkr.append(pkr)
        if cut and t > 0:
            self.cuts.append(t)
        ratios = [float(np.mean(keep[b])) if b in keep else 1.0 for b in range(self.depth)]
        self.block_sums += ratios
        for tid, label, score, _ in shown:
            row = self.tracks.setdefault(tid, TrackRow(label))
            row.frames.append(t)
            row.scores.append(float(score))
        if t not in self.pictured:
            return
        hw = display_size(frame.shape[0], frame.shape[1], DISPLAY_SIDE)
        self.overlays.append(overlay_panel(frame, shown, hw, f"frame {t + 1} . PKR {pkr:.2f}"))
        if keep:
            thw = display_size(frame.shape[0], frame.shape[1], TILE_SIDE)
            starts = stage_blocks(ratios)
            tiles = [keep_tile(frame, keep[b], self.grid, thw,
                               f"{stage_label(b, starts, self.depth)}: {float(np.mean(keep[b])):.0%}")
                     for b in starts if b in keep and ratios[b] < 0.999]
            full = np.ones(self.grid[0] * self.grid[1], dtype=bool)
            self.kept.append(hstack(tiles or [keep_tile(frame, full, self.grid, thw, "every block: 100%")]))

    def table(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in ("track", "category", "first frame", "last frame", "frames drawn",
                                                   "mean score"))
        rows = []
        for tid, r in sorted(self.tracks.items()):
            cells = [f"#{tid}", html.escape(r.category), str(r.frames[0] + 1), str(r.frames[-1] + 1), str(len(r.frames)),
                     f"{np.mean(r.scores):.2f}"]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        return f'<table id="tracks"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'

    def write(self, out: str | Path, intro: Sequence[str], notes: Sequence[str], fps: float) -> Path:
        """Pictures and `index.html` into `out`; returns the page's path."""
        out = Path(out)
        T = len(self.pkr)
        ms = max(40, int(round(1000 / fps)))
        spread = "" if len(self.overlays) == T else f" ({len(self.overlays)} of the {T} frames, evenly spread)"
        save_gif(same_size(self.overlays), out / "overlay.gif", ms)
        figures = [Figure("overlay.gif", "Tracks over the video",
                          f"Each track tinted in its colour and labelled #id, category and score{spread}; "
                          "the same ids as frames.json and overlay.mp4.")]
        if self.kept:
            save_gif(same_size(self.kept), out / "kept.gif", ms)
            figures.append(Figure("kept.gif", "Patches each pruning stage processed",
                                  "One tile per stage (blocks between two pruning modules see the same patches); "
                                  "dimmed patches were skipped and keep their last feature."))
            ratios = (self.block_sums / max(T, 1)).tolist()
            keep_ratio_plot({"this run": ratios}, {}, out / "keep_ratio.png", f"mean over the {T} frames")
            figures.append(Figure("keep_ratio.png", "Keep ratio per block",
                                  "Share of patches each block processed, averaged over the video's frames."))
            pkr_plot(self.pkr, self.cuts, out / "pkr_per_frame.png")
            figures.append(Figure("pkr_per_frame.png", "Patch keep ratio per frame",
                                  "A video's first frame (and the first after a scene cut, dotted) has no "
                                  "previous frame to map, so a temporal pruner keeps more there."))
        table_note = f"{len(self.tracks)} tracks drawn in {T} frames."
        return write_page(out / "index.html", render_page(self.title, intro, self.table(), table_note, figures, notes))


def same_size(pictures: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Pad pictures to the largest height and width (GIF frames share one size)."""
    h, w = max(p.shape[0] for p in pictures), max(p.shape[1] for p in pictures)
    out = []
    for p in pictures:
        canvas = np.empty((h, w, 3), np.uint8)
        canvas[:] = BACKGROUND
        canvas[:p.shape[0], :p.shape[1]] = p
        out.append(canvas)
    return out


def pkr_plot(pkr: Sequence[float], cuts: Sequence[int], path: str | Path) -> Path:
    """PKR against frame number, scene cuts as dotted lines (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    ax.plot(np.arange(1, len(pkr) + 1), pkr, marker="o" if len(pkr) <= 60 else None, ms=3)
    for c in cuts:
        ax.axvline(c + 1, color="grey", ls=":", lw=1)
    ax.set_xlabel("frame")
    ax.set_ylabel("PKR")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    return save_plot(fig, path)


__all__ = ["SegmentPage", "pkr_plot", "same_size", "PAGE_FRAMES"]
