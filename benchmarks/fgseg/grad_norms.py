"""Gradient norms reaching the learned pruning modules in fine-tuning, with the runner's training path.

Usage: .venv/bin/python benchmarks/fgseg/grad_norms.py DENSE.safetensors [--methods vpp svit ...]
       [--init-keep] [--foreground appearance|cue] [--chains 8] [--threads 1]

Loads a dense fgseg checkpoint (stage 1 of `patchprune bench fgseg`), attaches each method at 0.55
(VPP with the bench's smoothing), and back-propagates the seg loss of the same stage-2 chains
(ref-ref -> ref -> key, batch 4, torch seeded identically per chain). Prints, per method, the
gradient norm of Map-SM's parameters (VPP) and of all pruning modules per chain, and the PKR of the
passes (the keep rate at step 0 of a fine-tune, with the authors' init or `--init-keep`).
Masking execution is the issue-12 form: hard key padding + gated residual (VPP, SViT), DynamicViT's
policy softmax with every token updated (DynamicViT, TPS). About a minute per method on 1 thread.
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


def grad_norm(params) -> float:
    g = [p.grad.flatten() for p in params if p.grad is not None]
    return float(torch.cat(g).norm()) if g else 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dense")
    ap.add_argument("--methods", nargs="+", default=["vpp", "svit", "dynamicvit", "tps"])
    ap.add_argument("--init-keep", action="store_true", help="start the modules at their keep rate (our option)")
    ap.add_argument("--foreground", default=None, choices=("appearance", "cue"), help="default: the bench's")
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = FgSegBenchConfig.quick()
    diff = cfg.difficulty if args.foreground is None else (
        APPEARANCE_DIFFICULTY if args.foreground == "appearance" else CUE_DIFFICULTY)
    data = make_data(0, "train", 64, cfg.frames, cfg.size, progress=False, **diff)
    weight = data.class_weights(cfg.class_weight_power)
    results = {}
    for method in args.methods:
        model = FgSegModel(seg_config(cfg, data.num_classes))
        load_checkpoint(args.dense, {"model": model})
        options = {"smooth_kernel": cfg.vpp_smooth_kernel} if method == "vpp" else {}
        torch.manual_seed(0)  # the modules' init
        pruner = build(method, model.backbone, 0.55, init_keep=args.init_keep, **options).train()
        model.train()
        gen = torch.Generator().manual_seed(123)
        mapsm, totals, pkrs = [], [], []
        for c in range(args.chains):
            images, labels = sample_chains(data, 4, gen)
            torch.manual_seed(1000 + c)
            model.zero_grad(set_to_none=True)
            pruner.zero_grad(set_to_none=True)
            seg, _, pkr = run_chain(model, pruner, images, labels, ref_weight=0.5, weight=weight)
            seg.backward()
            if method == "vpp":
                mapsm.append(grad_norm(pruner.runner.policy_at(1).parameters()))
            totals.append(grad_norm(pruner.runner.policies.parameters()))
            pkrs.extend(pkr)
        results[method] = {"mapsm": mapsm, "all_modules": totals, "pkr_mean": sum(pkrs) / len(pkrs)}
        extra = (f"Map-SM per chain {[f'{v:.3g}' for v in mapsm]} (min {min(mapsm):.3g}, max {max(mapsm):.3g}); "
                 if mapsm else "")
        print(f"{method}: {extra}all modules per chain {[f'{v:.3g}' for v in totals]} "
              f"(min {min(totals):.3g}, max {max(totals):.3g}); PKR at step 0 {sum(pkrs) / len(pkrs):.3f}", flush=True)
    print(json.dumps({"init_keep": args.init_keep, "threads": args.threads, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
