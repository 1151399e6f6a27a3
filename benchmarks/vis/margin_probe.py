"""How decisive a VPP run's selective modules are: the keep margins z_keep - z_drop of every SM on
the live tokens of the first videos of a split, against the scale of the inference noise.

An SM keeps a token iff margin + (g1 - g2) / tau > 0 with g1, g2 ~ Gumbel(0, 1): the noise term is
logistic with scale 1 / tau (0.1 at the spec's tau = 10; standard deviation 0.18). Margins well
inside +-0.18 mean the noise, not the token, decides ("sparse background activation" becomes random
selection); margins far outside it mean the module selects and the noise only flips a few tokens.

    python benchmarks/vis/margin_probe.py --run runs/s12/detach1200_s0 --data runs/vis_cc_valid120 --videos 6
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from patchprune.learned.sm import SM
from patchprune.vis.data import load_split, square_size
from patchprune.vis.evaluate import stream_video
from patchprune.vis.run import load_run


def sm_margins(run: str, data_dir: str, videos: int = 6, split: str = "valid") -> dict[str, np.ndarray]:
    """{SM module name: margins of every token it scored} over `videos` streamed videos."""
    loaded = load_run(run)
    if loaded.encoder is None:
        raise ValueError(f"{run}: a dense run has no selective modules")
    cfg = loaded.model.config
    data = load_split(data_dir, split, square_size(cfg.img_size), cfg.categories, videos)
    margins: dict[str, list[torch.Tensor]] = {}

    def record(name: str):
        def hook(module, inputs, out):
            margins.setdefault(name, []).append((out[..., 0] - out[..., 1]).detach().flatten())
        return hook

    handles = [m.head.register_forward_hook(record(name)) for name, m in loaded.encoder.named_modules()
               if isinstance(m, SM)]
    if not handles:
        raise ValueError(f"{run}: no VPP selective module (SM) in the run's pruner")
    with torch.no_grad():
        for clip in data.clips:
            torch.manual_seed(clip.video_id)  # as eval vis seeds VPP's inference noise
            stream_video(loaded.model, loaded.encoder, clip, "minvis", cfg.categories)
    for h in handles:
        h.remove()
    return {name: torch.cat(v).numpy() for name, v in margins.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--tau", type=float, default=10.0, help="the modules' Gumbel temperature (VPP convention)")
    args = ap.parse_args()
    noise_std = math.pi / math.sqrt(3) / args.tau
    print(f"| run | module | tokens | mean margin | std | share with abs(margin) < {noise_std:.2f} (noise std) "
          f"| kept without noise |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for run in args.run:
        for name, m in sm_margins(run, args.data, args.videos).items():
            print(f"| {run} | {name} | {m.size} | {m.mean():+.3f} | {m.std():.3f} | "
                  f"{np.mean(np.abs(m) < noise_std):.2f} | {np.mean(m >= 0):.2f} |")


if __name__ == "__main__":
    main()
