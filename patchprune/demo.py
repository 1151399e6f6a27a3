"""`patchprune demo`: the speed benchmark on a generated video frame, and a picture of the kept patches.

Placeholder for the main job until trained segmentation models ship: it shows the runner's real
speed-up against the dense timm model (with the FLOP ratio beside it) on frames of a synthetic
video, and draws which patches every block processed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from patchprune.bench.speed import build_vit, format_table, run_speed_bench
from patchprune.vit import sparse_vit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> normalised float [T, 3, H, W]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def plot_kept_patches(frame: np.ndarray, keep_masks: dict[int, torch.Tensor], grid: tuple[int, int], path: Path,
                      title: str) -> None:
    """One panel per block: the frame with the patches that block did not process dimmed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = sorted(keep_masks)
    cols = 6
    rows = (len(blocks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows + 0.4))
    H, W = frame.shape[:2]
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, b in zip(np.atleast_1d(axes).ravel(), blocks):
        keep = keep_masks[b][0].reshape(grid).float().numpy()
        up = np.kron(keep, np.ones((H // grid[0], W // grid[1])))
        shown = frame.astype(np.float32) * (0.25 + 0.75 * up[..., None])
        ax.imshow(shown.astype(np.uint8))
        ax.set_title(f"block {b}: {keep.mean():.0%}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def run_demo(out_dir: str = "patchprune_demo", model: str = "vit_small_patch16_224", img_size: int = 384,
             keep: str = "1:0.6,3:0.8,6:0.8,9:0.8", policy: str = "evtp", frames: int = 4, seed: int = 0,
             repeats: int = 5) -> dict:
    from patchprune.data.synth import generate_video

    video = generate_video(seed, frames=frames, size=img_size)
    x = frames_to_tensor(video.frames)
    result = run_speed_bench(model=model, img_size=img_size, keep=keep, policy=policy, images=x,
                             repeats=repeats, warmup=1, seed=seed, progress=True)
    torch.manual_seed(seed)
    vit = build_vit(model, img_size, torch.device("cpu"))
    runner = sparse_vit(vit, keep, default_policy=policy).eval()
    with torch.inference_mode():
        out = runner(x[:1])
    grid = runner.grid_for(x[:1])
    picture = Path(out_dir) / "kept_patches.png"
    plot_kept_patches(video.frames[0], out.keep_masks, grid, picture,
                      f"{model} (random weights), policy {policy}, schedule {keep}: PKR {out.pkr:.2f}")
    result["picture"] = str(picture)
    (Path(out_dir) / "speed.json").write_text(json.dumps(result, indent=2))
    return result


def _run(args) -> int:
    result = run_demo(out_dir=args.out, model=args.model, img_size=args.img_size, keep=args.keep,
                      policy=args.policy, frames=args.frames, seed=args.seed, repeats=args.repeats)
    print(format_table(result))
    print(f"picture of the kept patches: {result['picture']}")
    return 0
