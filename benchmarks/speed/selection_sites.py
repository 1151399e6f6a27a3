"""The four in-ViT selections of `bench speed`'s default schedule, timed alone: pool rounds vs matrix mode.

Features of a random-weight ViT-S/16 at 512 px after blocks 0, 2, 5, 8 (the inputs of blocks 1, 3,
6, 9), keeping 614 of 1024, 491 of 614, 393 of 491 and 314 of 393 tokens (the first n tokens stand
in for the kept set), as `--keep 1:0.6,3:0.8,6:0.8,9:0.8` does. Prints the min over rounds of the
four selections' total, per method and engine strategy (the picks are the same; speed only).

    python benchmarks/speed/selection_sites.py --threads 2 --rounds 7
"""
from __future__ import annotations

import argparse
import time

import torch

from patchprune.bench.speed import build_vit
from patchprune.select import select

SITES = ((1, 1024, 614), (3, 614, 491), (6, 491, 393), (9, 393, 314))


def site_features(seed: int = 0) -> dict[int, torch.Tensor]:
    torch.manual_seed(seed)
    vit = build_vit("vit_small_patch16_224", 512, torch.device("cpu"))
    x = vit._pos_embed(vit.patch_embed(torch.randn(1, 3, 512, 512)))
    feats = {}
    with torch.no_grad():
        for b in range(max(s for s, _, _ in SITES) + 1):
            if any(s == b for s, _, _ in SITES):
                feats[b] = x[:, vit.num_prefix_tokens:].contiguous()
            x = vit.blocks[b](x)
    return feats


def time_sites(feats: dict[int, torch.Tensor], method: str, strategy: str) -> float:
    t0 = time.perf_counter()
    for b, n, k in SITES:
        select(feats[b][:, :n], k, method=method, grid=(32, 32), index=torch.arange(n)[None], strategy=strategy)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--methods", default="evtp,kcenter,divprune")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    feats = site_features()
    for method in args.methods.split(","):
        best = {"pool": float("inf"), "matrix": float("inf")}
        for _ in range(args.rounds):
            for strategy in best:
                best[strategy] = min(best[strategy], time_sites(feats, method, strategy))
        print(f"{method:9s} {args.threads} threads: pool rounds {best['pool'] * 1e3:6.1f} ms   "
              f"matrix {best['matrix'] * 1e3:6.1f} ms   (4 sites, min of {args.rounds})")


if __name__ == "__main__":
    main()
