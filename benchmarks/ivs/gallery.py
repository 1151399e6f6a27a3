"""What the instructed-segmentation model does, and what pruning changes: one picture.

One row per val image expression (the first N, not chosen): the image with the instruction and its
ground truth, the dense prediction, then per method the visual tokens that reached the language model
(the rest dimmed) with that method's prediction over them; each panel titled with its IoU.

    python benchmarks/ivs/gallery.py --run benchmarks/ivs/p4/seed0 --data runs/ivs_data_cc \
        --methods evtp,divprune,random --ratio 0.1 --rows 6 --out docs/img/ivs_p4_gallery.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

DISPLAY_SIDE = 192


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """One sample's IoU as `evaluate` counts it (ReferMeter: 1.0 when both masks are empty)."""
    from patchprune.metrics.refer import ReferMeter

    return ReferMeter().update(pred, gt)


def gallery(run: str | Path, data: str | Path, methods: list[str], ratio: float, rows: int,
            seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """(the picture [H, W, 3] uint8, per row: text and IoU per column). The rows run as one batch, as
    `evaluate` runs them (so the random method draws what it draws there)."""
    from patchprune.data.viz import overlay_masks
    from patchprune.demo_page.pictures import TITLE_H, hstack, keep_tile, resize_mask, resize_rgb, titled, vstack
    from patchprune.ivs.data import load_items, make_batch
    from patchprune.ivs.run import load_run

    model, tok, config, _ = load_run(run)
    S, grid = config.img_size, config.grid
    hw = (DISPLAY_SIDE, DISPLAY_SIDE)
    items = load_items(data, "image", "val", S, rows)
    batch, _, _ = make_batch(items, [0] * len(items), tok, config.ref_frames)  # one batch, as `evaluate` runs 8
    runs = {}
    with torch.inference_mode():
        for method in ["dense", *methods]:
            options = {"seed": seed} if method == "random" else {}
            torch.manual_seed(seed)
            out = model(batch, method=method, ratio=1.0 if method == "dense" else ratio, **options)
            runs[method] = (out.predict((S, S))[0].numpy(), out.kept_index.numpy(), out.kept_tokens)
    picture_rows, record = [], []
    for i, item in enumerate(items):
        frame, gt = item.frames[0].numpy(), item.masks[0].numpy()

        def tinted(mask: np.ndarray, title: str) -> np.ndarray:
            return titled(overlay_masks(resize_rgb(frame, hw), [resize_mask(mask, hw)]), title)

        text = item.text if len(item.text) <= 30 else item.text[:27] + "..."
        panels = [tinted(gt, text)]
        scores = {"text": item.text}
        for method, (preds, kept_index, kept_tokens) in runs.items():
            scores[method] = iou(preds[i], gt)
            if method == "dense":
                panels.append(tinted(preds[i], f"dense: IoU {scores[method]:.2f}"))
                continue
            keep = np.zeros(grid[0] * grid[1], dtype=bool)
            keep[kept_index[i]] = True
            tile = keep_tile(frame, keep, grid, hw, f"{method} {kept_tokens} tok: IoU {scores[method]:.2f}")
            tile[TITLE_H:] = overlay_masks(tile[TITLE_H:], [resize_mask(preds[i], hw)])
            panels.append(tile)
        picture_rows.append(hstack(panels))
        record.append(scores)
    return vstack(picture_rows), record


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--methods", default="evtp,divprune,random")
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--rows", type=int, default=6, help="the first N val image expressions (one batch)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random method")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from patchprune.demo_page.pictures import save_png
    from patchprune.ivs.evaluate import check_eval_args

    methods = [m for m in args.methods.split(",") if m]
    if args.rows < 1:
        raise SystemExit("gallery: --rows must be >= 1")
    torch.set_num_threads(args.threads)
    try:
        for m in methods:
            check_eval_args(m, args.ratio)
        picture, record = gallery(args.run, args.data, methods, args.ratio, args.rows, args.seed)
    except (ValueError, FileNotFoundError) as err:  # one line, as the other bench scripts
        raise SystemExit(f"gallery: {err}") from None
    save_png(picture, args.out)
    for row in record:
        print(row["text"], " ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "text"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
