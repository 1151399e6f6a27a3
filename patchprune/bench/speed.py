"""`patchprune bench speed`: dense vs pruned wall-clock of a timm ViT, next to the FLOP ratio.

The FLOP ratio (dense / pruned, pruning modules included) is the physical limit of the speed-up;
efficiency = speedup / flops_ratio says how much of it the implementation turns into time.
The pruned FLOPs are those of the tokens the samples really keep; padding (when samples keep
different counts) is reported separately as `flops_ratio_executed`, so its cost shows up as a loss
of efficiency instead of being hidden.
"""
from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from patchprune.bench.timing import time_side_by_side
from patchprune.metrics.flops import flops_with_output, vit_block_macs
from patchprune.validate import check_device, check_int, check_threads, check_timm_model
from patchprune.vit import SparseViT, SparseViTOutput, sparse_vit


def build_vit(name: str, img_size: int, device: torch.device, checkpoint: str | None = None) -> nn.Module:
    """A timm ViT for benchmarking; random weights unless a local safetensors checkpoint is given."""
    import timm

    from patchprune.vit import check_vit

    check_timm_model("model", name)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size)
    except TypeError:  # not a ViT (no img_size): the runner's check says which models it supports
        check_vit(timm.create_model(name, pretrained=False, num_classes=0))
        raise
    check_vit(model)
    if checkpoint:
        from safetensors.torch import load_file

        missing, unexpected = model.load_state_dict(load_file(checkpoint), strict=False)
        if unexpected:
            raise ValueError(f"{checkpoint}: unexpected keys for {name}: {unexpected[:5]}")
    return model.eval().to(device)


def unpadded_pruned_macs(runner: SparseViT, out: SparseViTOutput, counted_macs: float) -> float:
    """MACs the pruned call would cost without padding: counted MACs with the padded block cost
    replaced by the sum of each sample's own block cost (closed form, checked against the counter)."""
    model = runner.model
    dim, hidden, P = model.embed_dim, model.blocks[0].mlp.fc1.out_features, model.num_prefix_tokens
    padded = actual = 0.0
    for b in range(runner.depth):
        counts = out.keep_masks[b].sum(1).tolist()
        padded += len(counts) * vit_block_macs(max(counts) + P, dim, hidden)
        actual += sum(vit_block_macs(c + P, dim, hidden) for c in counts)
    return counted_macs - padded + actual


def run_speed_bench(model: str = "vit_small_patch16_224", img_size: int = 512, keep: str = "1:0.6,3:0.8,6:0.8,9:0.8",
                    batch: int = 1, policy: str = "random", warmup: int = 3, repeats: int = 10,
                    device: str | None = None, threads: int | None = None, seed: int = 0,
                    images: torch.Tensor | None = None, progress: bool = False) -> dict[str, Any]:
    """Time dense (timm forward_features) and pruned (sparse_vit) side by side; return the figures."""
    check_speed_options(img_size=img_size, batch=batch, warmup=warmup, repeats=repeats, threads=threads)
    dev = check_device("device", device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    vit = build_vit(model, img_size, dev)
    runner = sparse_vit(vit, keep, default_policy=policy).eval()
    for pol in runner.policies.values():  # seeded draws, so repeated calls prune alike
        if hasattr(pol, "seed") and getattr(pol, "seed") is None:
            pol.seed = seed
    x = images.to(dev) if images is not None else torch.randn(batch, 3, img_size, img_size, device=dev)

    dense_flops, _ = flops_with_output(vit.forward_features, x)
    pruned_flops, out = flops_with_output(runner, x)
    ideal_pruned_macs = unpadded_pruned_macs(runner, out, pruned_flops.macs)
    times = time_side_by_side({"dense": lambda: vit.forward_features(x), "pruned": lambda: runner(x)},
                              dev, warmup=warmup, repeats=repeats, progress=progress)
    speedup = times["dense"] / times["pruned"]
    flops_ratio = dense_flops.macs / ideal_pruned_macs
    return {
        "model": model,
        "img_size": img_size,
        "keep": keep,
        "policy": policy,
        "batch": int(x.shape[0]),
        "dense_ms": round(times["dense"], 3),
        "pruned_ms": round(times["pruned"], 3),
        "speedup": round(speedup, 4),
        "flops_ratio": round(flops_ratio, 4),
        "flops_ratio_executed": round(dense_flops.macs / pruned_flops.macs, 4),
        "efficiency": round(speedup / flops_ratio, 4),
        "pkr": round(out.pkr, 4),
        "dense_gmacs": round(dense_flops.gmacs, 3),
        "pruned_gmacs": round(ideal_pruned_macs / 1e9, 3),
        "tokens_per_block": [round(t, 1) for t in out.tokens_per_block],
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "dtype": str(x.dtype).replace("torch.", ""),
        "repeats": repeats,
    }


def format_table(result: dict[str, Any]) -> str:
    rows = [("model", result["model"]), ("image", f'{result["img_size"]} px, batch {result["batch"]}'),
            ("schedule", f'{result["keep"]} ({result["policy"]})'),
            ("dense", f'{result["dense_ms"]:.1f} ms  ({result["dense_gmacs"]:.2f} GMACs)'),
            ("pruned", f'{result["pruned_ms"]:.1f} ms  ({result["pruned_gmacs"]:.2f} GMACs, PKR {result["pkr"]:.3f})'),
            ("speed-up", f'{result["speedup"]:.2f}x  (FLOP ratio {result["flops_ratio"]:.2f}x, efficiency {result["efficiency"]:.2f})'),
            ("device", f'{result["device"]}, {result["threads"]} threads, {result["dtype"]}')]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def check_speed_options(prefix: str = "", **options: Any) -> None:
    """ValueError naming the first bad option (`prefix` "--" for command-line names)."""
    minimum = {"warmup": 0}
    for name, value in options.items():
        label = prefix + name.replace("_", "-") if prefix else name
        if name == "threads":
            check_threads(label, value)
        elif value is not None:
            check_int(label, value, minimum.get(name, 1))


def _run(args) -> int:
    from patchprune.policies.base import make_policy
    from patchprune.vit import parse_keep_string

    check_speed_options("--", img_size=args.img_size, batch=args.batch, warmup=args.warmup, repeats=args.repeats,
                        threads=args.threads)
    check_device("--device", args.device)
    check_timm_model("--model", args.model)
    for label, check in (("--keep", lambda: parse_keep_string(args.keep, args.policy)),
                         ("--policy", lambda: make_policy(args.policy, 0.5))):  # unknown: lists the available
        try:
            check()
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from None
    result = run_speed_bench(model=args.model, img_size=args.img_size, keep=args.keep, batch=args.batch,
                             policy=args.policy, warmup=args.warmup, repeats=args.repeats, device=args.device,
                             threads=args.threads, seed=args.seed, progress=not args.json)
    print(json.dumps(result) if args.json else format_table(result))
    return 0
