"""Which patches a pruned VIS run keeps: share of foreground patches kept against share of all patches,
per pruning block and frame index (frame 0 has no Map-SM prior), on the first videos of a split.

A pruner that finds the objects keeps more of the foreground than of the frame (fg > all); one whose
decisions are noise keeps both alike. The foreground of a patch follows the IoI rule (an instance
covers at least half of it, `patchprune.metrics.ioi.patch_masks`).

    python benchmarks/vis/keep_probe.py --run runs/bench_vis4/vpp055_s2 --data runs/vis_cc --videos 10
"""
from __future__ import annotations

import argparse

import torch

from patchprune.metrics.ioi import patch_masks
from patchprune.vis.data import load_split, square_size
from patchprune.vis.evaluate import stream_video
from patchprune.vis.run import load_run


def keep_shares(run: str, data_dir: str, videos: int = 10, split: str = "valid") -> dict[tuple[int, int], tuple[float, float]]:
    """{(frame index capped at 2, block): (share of fg patches kept, share of all patches kept)}."""
    loaded = load_run(run)
    cfg = loaded.model.config
    data = load_split(data_dir, split, square_size(cfg.img_size), cfg.categories, videos)
    grid = (data.side // loaded.model.backbone.patch_embed.patch_size[0],) * 2
    sums: dict[tuple[int, int], list[int]] = {}
    with torch.no_grad():
        for clip in data.clips:
            torch.manual_seed(clip.video_id)  # VPP draws noise at inference: seeded per video as in eval vis
            _, keeps, _ = stream_video(loaded.model, loaded.encoder, clip, "minvis", cfg.categories)
            for t, by_block in enumerate(keeps):
                fg = patch_masks(clip.masks[:, t], grid).any(0)
                for block, keep in by_block.items():
                    k = keep.bool().flatten()
                    s = sums.setdefault((min(t, 2), int(block)), [0, 0, 0, 0])
                    s[0] += int((k & fg).sum()); s[1] += int(fg.sum()); s[2] += int(k.sum()); s[3] += k.numel()
    return {key: (s[0] / max(s[1], 1), s[2] / max(s[3], 1)) for key, s in sorted(sums.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for (t, block), (fg, all_) in keep_shares(args.run, args.data, args.videos).items():
        print(f"frame {'2+' if t == 2 else t}  block {block:2d}:  fg kept {fg:.3f}   all kept {all_:.3f}")


if __name__ == "__main__":
    main()
