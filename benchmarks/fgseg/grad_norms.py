"""Gradient norms reaching VPP's Map-SM through the runner's policy attention, per eps.

Usage: .venv/bin/python benchmarks/fgseg/grad_norms.py DENSE.safetensors [--foreground appearance|cue]

Loads a dense fgseg checkpoint (stage 1 of `patchprune bench fgseg`), attaches VPP@0.55 (smoothing
3x3, as the bench) and, for each eps, back-propagates the seg loss of the same 8 stage-2 chains
(ref-ref -> ref -> key, batch 4, torch seeded identically per chain) and prints the gradient norm
of Map-SM's parameters and of all pruning modules. Takes about a minute per eps on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from patchprune.fgseg.config import APPEARANCE_DIFFICULTY, CUE_DIFFICULTY, FgSegBenchConfig, seg_config
from patchprune.fgseg.model import FgSegModel
from patchprune.fgseg.training import make_data, run_chain, sample_chains
from patchprune.learned import build
from patchprune.train.checkpoint import load_checkpoint


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dense")
    ap.add_argument("--foreground", default="appearance", choices=("appearance", "cue"))
    ap.add_argument("--eps", type=float, nargs="+", default=[1e-9, 1e-6, 1e-4, 1e-3, 1e-2])
    ap.add_argument("--chains", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = FgSegBenchConfig.quick()
    diff = APPEARANCE_DIFFICULTY if args.foreground == "appearance" else CUE_DIFFICULTY
    data = make_data(0, "train", 64, cfg.frames, cfg.size, progress=False, **diff)
    weight = data.class_weights(cfg.class_weight_power)
    results = {}
    for eps in args.eps:
        model = FgSegModel(seg_config(cfg, data.num_classes))
        load_checkpoint(args.dense, {"model": model})
        pruner = build("vpp", model.backbone, 0.55, smooth_kernel=cfg.vpp_smooth_kernel, policy_eps=eps).train()
        model.train()
        mapsm = pruner.runner.policy_at(1)
        gen = torch.Generator().manual_seed(123)
        norms, totals = [], []
        for c in range(args.chains):
            images, labels = sample_chains(data, 4, gen)
            torch.manual_seed(1000 + c)
            model.zero_grad(set_to_none=True)
            pruner.zero_grad(set_to_none=True)
            seg, _, _ = run_chain(model, pruner, images, labels, ref_weight=0.5, weight=weight)
            seg.backward()
            g = [p.grad.flatten() for p in mapsm.parameters() if p.grad is not None]
            norms.append(float(torch.cat(g).norm()) if g else 0.0)
            ga = [p.grad.flatten() for p in pruner.runner.policies.parameters() if p.grad is not None]
            totals.append(float(torch.cat(ga).norm()) if ga else 0.0)
        results[eps] = {"mapsm": norms, "all_modules": totals}
        print(f"eps {eps:g}: Map-SM grad norm per chain {[f'{v:.3g}' for v in norms]} "
              f"(min {min(norms):.3g}, max {max(norms):.3g}); all modules max {max(totals):.3g}", flush=True)
    print(json.dumps({str(k): v for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
