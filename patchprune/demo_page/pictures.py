"""Pictures of the demo page: mask overlays with track ids, kept patches per pruning stage, GIFs,
film strips and the keep-ratio-per-layer plot. Arrays are uint8 [H, W, 3]; files are written
atomically (`atomic_path`)."""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from patchprune.data.io import atomic_path
from patchprune.data.viz import overlay_masks

TITLE_H = 22
GAP = 6
BACKGROUND = (24, 24, 28)

# A displayed instance: (track id >= 1, label, score or None for ground truth, bool mask [H, W]).
Shown = tuple[int, str, "float | None", np.ndarray]


@lru_cache(maxsize=4)
def font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def display_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) with the longer side `side`, aspect kept."""
    s = side / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def resize_rgb(frame: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((hw[1], hw[0]), Image.BILINEAR))


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bool mask resized smoothly (bilinear on 0/255, then > half)."""
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((hw[1], hw[0]), Image.BILINEAR)
    return np.asarray(im) > 127


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """The panel under a dark title bar."""
    bar = Image.new("RGB", (panel.shape[1], TITLE_H), BACKGROUND)
    ImageDraw.Draw(bar).text((5, 3), title, fill=(235, 235, 235), font=font(13))
    return np.concatenate([np.asarray(bar), panel], 0)


def draw_tracks(frame: np.ndarray, shown: Sequence[Shown], label_size: int = 12) -> np.ndarray:
    """The frame (masks at its size) with each instance tinted in its track id's colour, outlined, and
    labelled "#id label score" at its centre (ids >= 1; the colour follows the id)."""
    hw = frame.shape[:2]
    top = max((tid for tid, *_ in shown), default=0)
    masks = [np.zeros(hw, bool) for _ in range(top)]
    for tid, _, _, m in shown:
        masks[tid - 1] = m
    img = Image.fromarray(overlay_masks(frame, masks))
    draw = ImageDraw.Draw(img)
    for tid, label, score, _ in shown:
        ys, xs = np.nonzero(masks[tid - 1])
        if not len(xs):
            continue
        text = f"#{tid} {label}" + (f" {score:.2f}" if score is not None else "")
        x0 = int(np.clip(xs.mean() - 3 * len(text), 2, max(2, hw[1] - 6 * len(text))))
        y0 = int(np.clip(ys.mean() - 7, 2, max(2, hw[0] - 16)))
        draw.text((x0, y0), text, fill=(255, 255, 255), font=font(label_size), stroke_width=2,
                  stroke_fill=(0, 0, 0))
    return np.asarray(img)


def overlay_panel(frame: np.ndarray, shown: Sequence[Shown], hw: tuple[int, int], title: str) -> np.ndarray:
    """`draw_tracks` on the frame at display size hw, under a title bar."""
    small = [(tid, label, score, resize_mask(m, hw)) for tid, label, score, m in shown]
    return titled(draw_tracks(resize_rgb(frame, hw), small), title)


def stage_blocks(ratios: Sequence[float], tol: float = 1e-3) -> list[int]:
    """Blocks where a pruning stage starts: block 0 and every block whose keep ratio differs from
    the block before (VPP: 0, 1, 3, 6, 9)."""
    return [b for b in range(len(ratios)) if b == 0 or abs(ratios[b] - ratios[b - 1]) > tol]


def stage_label(b: int, blocks: Sequence[int], depth: int) -> str:
    """"blocks 1-2" for the stage starting at b (it runs until the next stage's start)."""
    nxt = next((x for x in blocks if x > b), depth)
    return f"block {b}" if nxt - 1 == b else f"blocks {b}-{nxt - 1}"


def keep_tile(frame: np.ndarray, keep: np.ndarray, grid: tuple[int, int], hw: tuple[int, int], title: str) -> np.ndarray:
    """The frame at display size; patches the block did not process dimmed to a quarter, with a
    faint patch grid, under a title bar."""
    big = resize_rgb(frame, hw).astype(np.float32)
    k = np.asarray(keep, dtype=np.float32).reshape(grid)
    up = np.asarray(Image.fromarray((k * 255).astype(np.uint8)).resize((hw[1], hw[0]), Image.NEAREST)) > 127
    shown = big * np.where(up, 1.0, 0.22)[..., None]
    ys = (np.arange(1, grid[0]) * hw[0] / grid[0]).round().astype(int)
    xs = (np.arange(1, grid[1]) * hw[1] / grid[1]).round().astype(int)
    shown[ys, :] = shown[ys, :] * 0.6
    shown[:, xs] = shown[:, xs] * 0.6
    return titled(shown.clip(0, 255).astype(np.uint8), title)


def hstack(panels: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    cols = []
    for i, p in enumerate(panels):
        if p.shape[0] < h:
            p = np.concatenate([p, np.full((h - p.shape[0], p.shape[1], 3), BACKGROUND, np.uint8)], 0)
        cols.append(p)
        if i < len(panels) - 1:
            cols.append(np.full((h, gap, 3), BACKGROUND, np.uint8))
    return np.concatenate(cols, 1)


def vstack(rows: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    out = []
    for i, r in enumerate(rows):
        if r.shape[1] < w:
            r = np.concatenate([r, np.full((r.shape[0], w - r.shape[1], 3), BACKGROUND, np.uint8)], 1)
        out.append(r)
        if i < len(rows) - 1:
            out.append(np.full((gap, w, 3), BACKGROUND, np.uint8))
    return np.concatenate(out, 0)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", optimize=True)
    return path


def save_gif(frames: Sequence[np.ndarray], path: str | Path, ms_per_frame: int = 250) -> Path:
    """An animated GIF (loops forever); each frame quantised to 256 colours."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    ims = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
           for f in frames]
    path = Path(path)
    with atomic_path(path) as tmp:
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=ms_per_frame, loop=0,
                    disposal=1)
    return path


def keep_ratio_plot(per_model: dict[str, Sequence[float]], targets: dict[str, float | None], path: str | Path,
                    title: str) -> Path:
    """Mean keep ratio per block, one line per model, its PKR target dashed (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for i, (name, ratios) in enumerate(per_model.items()):
        colour = f"C{i}"
        ax.plot(range(len(ratios)), ratios, marker="o", ms=4, color=colour,
                label=f"{name} (PKR {float(np.mean(ratios)):.2f})")
        if targets.get(name) is not None:
            ax.axhline(float(targets[name]), color=colour, ls="--", lw=0.8)
    ax.set_xlabel("ViT block")
    ax.set_ylabel("share of patches processed")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(max(len(r) for r in per_model.values())))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title, fontsize=9)
    return save_plot(fig, path)


def save_plot(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Lay out a matplotlib figure, write it to `path` as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path
