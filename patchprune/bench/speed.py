"""`patchprune bench speed`: dense vs pruned wall-clock of a timm ViT, next to the FLOP ratio.

The FLOP ratio (dense / pruned, pruning modules included) is the physical limit of the speed-up;
efficiency = speedup / flops_ratio says how much of it the implementation turns into time.
The pruned FLOPs are those of the tokens the samples really keep; padding (when samples keep
different counts) is reported separately as `flops_ratio_executed`, so its cost shows up as a loss
of efficiency instead of being hidden.

The ceiling (`--methods` table): timm's own blocks fed each method's per-block token counts by
slicing (no selection, no bookkeeping, no grid restore) and timed in the same interleaved run. It
says how much of the FLOP ratio the hardware itself delivers at those token counts (GEMMs of a few
hundred tokens run fewer FLOPs a second than those of a thousand), so a row's gap to 1 splits into
the ceiling's gap (`ceiling_efficiency`) and the implementation's own cost (`of_ceiling` =
ceiling ms / pruned ms).
"""
from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from patchprune.metrics.timing import quartiles, round_ratios, time_side_by_side
from patchprune.metrics.flops import flops_with_output, vit_block_macs
from patchprune.validate import check_device, check_int, check_threads, check_timm_model, comma_list
from patchprune.vit import RAGGED_MODES, SparseViT, SparseViTOutput, check_ragged, parse_keep_string, sparse_vit


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


def sliced_blocks(vit: nn.Module, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """timm's forward_features with block i fed only the first prefix + counts[i] tokens (a slice,
    written back in place, so counts may rise again as SViT's do): the cost of a schedule's token
    counts with nothing else, the physical ceiling of any runner. Inference only (in-place)."""
    h = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    p = vit.num_prefix_tokens
    for blk, n in zip(vit.blocks, counts):
        h[:, :p + n] = blk(h[:, :p + n])
    return vit.norm(h)


def schedule_counts(tokens_per_block: list[float]) -> tuple[int, ...]:
    """Per-block patch-token counts of a runner's output (batch mean, rounded): the ceiling's slices."""
    return tuple(max(1, round(t)) for t in tokens_per_block)


def ceiling_key(counts: tuple[int, ...]) -> str:
    """The timing key of one ceiling schedule."""
    return "ceiling:" + ",".join(map(str, counts))


def unpadded_pruned_macs(runner: SparseViT, out: SparseViTOutput, counted_macs: float) -> float:
    """MACs the pruned call would cost without padding: counted MACs less what each padded block ran
    for its padding (`out.ragged`: "pad" the whole block, "pack" its attention core, "split" nothing),
    in closed form, checked against the counter."""
    model = runner.model
    dim, hidden, P = model.embed_dim, model.blocks[0].mlp.fc1.out_features, model.num_prefix_tokens

    def padded_cost(n: int, mode: str) -> float:  # what a sample of n tokens costs in a padded part
        return vit_block_macs(n, dim, hidden) if mode == "pad" else 2 * n * n * dim  # "pack": attention core

    padding = 0.0
    for b, mode in out.ragged.items():
        if mode == "split":
            continue
        tokens = [c + P for c in out.keep_masks[b].sum(1).tolist()]
        padding += len(tokens) * padded_cost(max(tokens), mode) - sum(padded_cost(n, mode) for n in tokens)
    return counted_macs - padding


def run_speed_bench(model: str = "vit_small_patch16_224", img_size: int = 512, keep: str = "1:0.6,3:0.8,6:0.8,9:0.8",
                    batch: int = 1, policy: str = "random", warmup: int = 3, repeats: int = 10,
                    device: str | None = None, threads: int | None = None, seed: int = 0,
                    images: torch.Tensor | None = None, progress: bool = False,
                    allocator: str = "steady", ragged: tuple[str, ...] = ("auto",),
                    spread: float = 0.0) -> dict[str, Any]:
    """Time dense (timm forward_features) and pruned (sparse_vit) side by side; return the figures.
    allocator: "steady" (default) or "system" (`patchprune.metrics.timing.steady_allocator`).
    ragged: `SparseViT` ragged modes to time, each its own pruned runner in the same interleaved run
    (the top-level figures are the first's; `by_ragged` has every one). spread: per-sample spread of
    random-bernoulli's keep probability (`patchprune.policies.random`), so samples keep very
    different counts."""
    check_speed_options(img_size=img_size, batch=batch, warmup=warmup, repeats=repeats, threads=threads)
    dev = check_device("device", device)
    ragged = check_ragged_modes("ragged", ragged)
    if spread and policy != "random-bernoulli":
        raise ValueError(f"spread varies random-bernoulli's keep probability per sample; policy is {policy!r}")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    vit = build_vit(model, img_size, dev)
    schedule = {pos: (name, ratio, {"spread": spread} if spread else {})
                for pos, (name, ratio) in parse_keep_string(keep, policy).items()}
    runners = {mode: sparse_vit(vit, schedule, ragged=mode).eval() for mode in ragged}
    for runner in runners.values():
        for pol in runner.policies.values():  # seeded draws, so repeated calls prune alike
            if hasattr(pol, "seed") and getattr(pol, "seed") is None:
                pol.seed = seed
    x = images.to(dev) if images is not None else torch.randn(batch, 3, img_size, img_size, device=dev)

    dense_flops, _ = flops_with_output(vit.forward_features, x)
    counted = {mode: flops_with_output(runner, x) for mode, runner in runners.items()}
    first = ragged[0]
    out = counted[first][1]
    ideal_pruned_macs = unpadded_pruned_macs(runners[first], out, counted[first][0].macs)
    flops_ratio = dense_flops.macs / ideal_pruned_macs
    fns = {"dense": lambda: vit.forward_features(x)}
    keys = {mode: "pruned" if mode == first else f"pruned/{mode}" for mode in ragged}  # "pruned": the first
    fns.update({keys[mode]: (lambda r=runner: r(x)) for mode, runner in runners.items()})
    times = time_side_by_side(fns, dev, warmup=warmup, repeats=repeats, progress=progress, allocator=allocator)
    by_ragged = {}
    for mode in ragged:
        key = keys[mode]
        speedup = times["dense"] / times[key]
        by_ragged[mode] = {
            "ran": sorted(set(counted[mode][1].ragged.values())),
            "pruned_ms": round(times[key], 3),
            "speedup": round(speedup, 4),
            "flops_ratio_executed": round(dense_flops.macs / counted[mode][0].macs, 4),
            "efficiency": round(speedup / flops_ratio, 4),
            "efficiency_rounds": [round(q / flops_ratio, 4) for q in quartiles(round_ratios(times, "dense", key))],
        }
    top = by_ragged[first]
    return {
        "model": model,
        "img_size": img_size,
        "keep": keep,
        "policy": policy,
        "spread": spread,
        "batch": int(x.shape[0]),
        "dense_ms": round(times["dense"], 3),
        "pruned_ms": top["pruned_ms"],
        "speedup": top["speedup"],
        "flops_ratio": round(flops_ratio, 4),
        "flops_ratio_executed": top["flops_ratio_executed"],
        "efficiency": top["efficiency"],
        "efficiency_rounds": top["efficiency_rounds"],
        "ragged": first,
        "by_ragged": by_ragged,
        "pkr": round(out.pkr, 4),
        "dense_gmacs": round(dense_flops.gmacs, 3),
        "pruned_gmacs": round(ideal_pruned_macs / 1e9, 3),
        "tokens_per_block": [round(t, 1) for t in out.tokens_per_block],
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "dtype": str(x.dtype).replace("torch.", ""),
        "repeats": repeats,
        "allocator": times.allocator,
        "page_faults_per_call": times.faults,
        "tokens_per_sample": {str(pos): m.sum(1).tolist() for pos, m in sorted(out.keep_masks.items())
                              if pos in runners[first].schedule},
    }


def check_ragged_modes(label: str, modes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The ragged modes as a tuple of distinct known names, or a ValueError naming `label`."""
    modes = tuple(modes)
    if not modes:
        raise ValueError(f"{label}: give at least one of {', '.join(RAGGED_MODES)}")
    for mode in modes:
        try:
            check_ragged(mode)
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from None
    if len(set(modes)) != len(modes):
        raise ValueError(f"{label}: {', '.join(modes)} names a mode twice")
    return modes


# ------------------------------------------------------------------------------------------------
# Every in-ViT method side by side (`--methods all`)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOME_BLOCK_R = 40  # ToMe per block: r tokens merged in every block (issue 10's configuration)
LEARNED_TARGET = 0.55  # learned methods: untrained modules at their paper configuration for this PKR target
# policies that are no method of their own: the identity, the generic "select" alias (its methods are listed)
NOT_METHODS = ("keep-all", "select", "tome-block")
# must-show bars of issue 10: efficiency at batch 1, and at larger batches (per-sample counts)
EFFICIENCY_BARS = {1: 0.95, "batched": 0.9}
# A ceiling efficiency above this means the dense calls ran slower than timm's own blocks at the pruned
# counts allow: something outside the timed code (another process, the host) slowed them, so every
# efficiency of the run is inflated. Quiet CPU runs measured 0.89-0.98 (docs/benchmarks.md, issue 10);
# the margin above 1 leaves room for cache effects at the smaller counts.
CEILING_TRUST = 1.02


def method_catalogue() -> dict[str, str]:
    """Every in-ViT method by name -> kind: "policy" (training-free, at the `--keep` schedule),
    "learned" (`patchprune.learned.build` at its default configuration, untrained modules) or
    "tome-block" (ToMe per block, r = TOME_BLOCK_R at every block). From the registries, so a new
    method file shows up here without a list to edit."""
    from patchprune.learned.registry import available_methods as learned_methods
    from patchprune.policies.base import _POLICIES, available_policies

    learned = learned_methods()
    out = {name: "policy" for name in available_policies()
           if name not in NOT_METHODS and not _POLICIES.get(name).__module__.startswith("patchprune.learned")}
    out.update({name: "learned" for name in learned})
    out["tome-block"] = "tome-block"
    return dict(sorted(out.items()))


def resolve_methods(text: str) -> list[str]:
    """"all" or a comma list of catalogue names -> names, or a ValueError listing the available ones."""
    catalogue = method_catalogue()
    if text.strip() == "all":
        return list(catalogue)
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in catalogue]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {', '.join(unknown) or repr(text)}; available: all, {', '.join(catalogue)}")
    return list(dict.fromkeys(names))


def build_method(name: str, kind: str, vit: nn.Module, keep: str, seed: int) -> SparseViT:
    """The eval runner of one catalogue method around `vit` (the same model for every method)."""
    if kind == "learned":
        from patchprune.learned.registry import build

        runner = build(name, vit, target=LEARNED_TARGET).eval().runner
    elif kind == "tome-block":
        from patchprune.select.policies import tome_schedule

        runner = sparse_vit(vit, tome_schedule(len(vit.blocks), TOME_BLOCK_R)).eval()
    else:
        runner = sparse_vit(vit, keep, default_policy=name).eval()
    for pol in runner.policies.values():  # seeded draws, so repeated calls prune alike
        if hasattr(pol, "seed") and getattr(pol, "seed") is None:
            pol.seed = seed
    return runner


def run_methods_bench(methods: list[str] | str = "all", batches: tuple[int, ...] = (1, 8),
                      dtypes: tuple[str, ...] = ("fp32",), model: str = "vit_small_patch16_224", img_size: int = 512,
                      keep: str = "1:0.6,3:0.8,6:0.8,9:0.8", warmup: int = 1, repeats: int = 5,
                      device: str | None = None, threads: int | None = None, seed: int = 0,
                      progress: bool = False, clock: str = "wall", allocator: str = "steady",
                      ragged: str = "auto") -> dict[str, Any]:
    """One table of every method in `methods` at every batch x dtype: dense (timm forward_features)
    timed once per (batch, dtype), interleaved with every method's pruned forward in one
    side-by-side run; FLOP ratio = dense MACs / MACs of the kept tokens (pruning modules included).
    clock "cpu": CPU time of the timing thread (needs threads=1 on a CPU; a development estimate).
    allocator: "steady" (default) or "system" (`patchprune.metrics.timing.steady_allocator`).
    ragged: every runner's `SparseViT` ragged mode (how samples keeping different counts run)."""
    check_ragged_modes("ragged", (ragged,))
    names = resolve_methods(methods) if isinstance(methods, str) else list(methods)
    catalogue = method_catalogue()
    check_speed_options(img_size=img_size, warmup=warmup, repeats=repeats, threads=threads)
    for b in batches:
        check_int("batches", b, 1)
    dev = check_device("device", device)
    if clock == "cpu" and (dev.type != "cpu" or threads != 1):
        raise ValueError("clock 'cpu' times one CPU thread: use it with device cpu and threads 1")
    if threads:
        torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    used_allocator = allocator  # "system" when "steady" cannot be applied here (no glibc)
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        torch.manual_seed(seed)
        vit = build_vit(model, img_size, dev).to(dtype)
        runners, errors = {}, {}
        for name in names:
            try:
                runners[name] = build_method(name, catalogue[name], vit, keep, seed)
                runners[name].ragged = ragged
            except ValueError as err:  # e.g. EViT on a model without a CLS token
                errors[name] = str(err)
        for batch in batches:
            torch.manual_seed(seed)
            x = torch.randn(batch, 3, img_size, img_size, device=dev, dtype=dtype)
            dense_flops, _ = flops_with_output(vit.forward_features, x)
            measured = {}
            for name, runner in runners.items():
                torch.manual_seed(seed)
                pruned_flops, out = flops_with_output(runner, x)
                measured[name] = (pruned_flops.macs, unpadded_pruned_macs(runner, out, pruned_flops.macs), out)
            fns = {"dense": lambda: vit.forward_features(x)}
            fns.update({name: (lambda r=runner: r(x)) for name, runner in runners.items()})
            schedules = {name: schedule_counts(out.tokens_per_block) for name, (_, _, out) in measured.items()}
            ceiling_macs = {}
            for counts in dict.fromkeys(schedules.values()):
                fn = fns[ceiling_key(counts)] = lambda c=counts: sliced_blocks(vit, x, list(c))
                ceiling_macs[counts] = flops_with_output(fn, ())[0].macs
            times = time_side_by_side(fns, dev, warmup=warmup, repeats=repeats, progress=progress, clock=clock,
                                      allocator=allocator)
            used_allocator = times.allocator
            for name in names:
                row: dict[str, Any] = {"method": name, "kind": catalogue[name], "batch": batch, "dtype": dtype_name}
                if name in errors:
                    rows.append({**row, "error": errors[name]})
                    continue
                executed, ideal, out = measured[name]
                speedup = times["dense"] / times[name]
                ratio = dense_flops.macs / ideal
                rows.append({**row, "dense_ms": round(times["dense"], 3), "pruned_ms": round(times[name], 3),
                             "speedup": round(speedup, 4), "flops_ratio": round(ratio, 4),
                             "flops_ratio_executed": round(dense_flops.macs / executed, 4),
                             "efficiency": round(speedup / ratio, 4),
                             "efficiency_rounds": [round(q / ratio, 4) for q in
                                                   quartiles(round_ratios(times, "dense", name))],
                             "pkr": round(out.pkr, 4),
                             "tokens_per_block": [round(t, 1) for t in out.tokens_per_block],
                             "dense_faults": times.faults["dense"], "pruned_faults": times.faults[name],
                             **ceiling_row(times, dense_flops.macs, schedules[name], ceiling_macs[schedules[name]],
                                           times[name])})
    return {"model": model, "img_size": img_size, "keep": keep, "tome_block_r": TOME_BLOCK_R,
            "learned_target": LEARNED_TARGET, "batches": list(batches), "dtypes": list(dtypes),
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "warmup": warmup, "repeats": repeats, "seed": seed,
            "clock": clock, "allocator": used_allocator, "ragged": ragged, "rows": rows,
            "checks": efficiency_checks(rows), "warnings": timing_warnings(rows)}


def ceiling_row(times: dict[str, float], dense_macs: float, counts: tuple[int, ...], macs: float,
                pruned_ms: float) -> dict[str, float]:
    """The ceiling's columns of one row: its ms, its efficiency (speed-up over dense / its FLOP
    ratio) and the share of it the method reaches (ceiling ms / pruned ms)."""
    ms = times[ceiling_key(counts)]
    return {"ceiling_ms": round(ms, 3), "ceiling_efficiency": round(times["dense"] / ms / (dense_macs / macs), 4),
            "of_ceiling": round(ms / pruned_ms, 4)}


def efficiency_checks(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Issue 10's bars per row: efficiency >= 0.95 at batch 1, >= 0.9 at larger batches."""
    out = {}
    for r in rows:
        if "efficiency" in r:
            bar = EFFICIENCY_BARS[1] if r["batch"] == 1 else EFFICIENCY_BARS["batched"]
            out[f'{r["method"]} b{r["batch"]} {r["dtype"]} >= {bar}'] = r["efficiency"] >= bar
    return out


def timing_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """One line per batch x dtype whose ceiling efficiency exceeds CEILING_TRUST in some row: that
    run's efficiencies (and the bars they meet) are inflated and should be measured again."""
    high: dict[tuple[int, str], list[float]] = {}
    for r in rows:
        if r.get("ceiling_efficiency", 0.0) > CEILING_TRUST:
            high.setdefault((r["batch"], r["dtype"]), []).append(r["ceiling_efficiency"])
    return [f"batch {batch} {dtype}: ceiling efficiency up to {max(values):.2f} (> {CEILING_TRUST}) in "
            f"{len(values)} row(s): the dense calls were slowed by something outside the timed code, "
            "so these efficiencies are inflated; time again on a quiet machine"
            for (batch, dtype), values in high.items()]


def format_methods_table(result: dict[str, Any]) -> str:
    """The markdown table of `run_methods_bench` with a header line saying what ran where."""
    head = (f'{result["model"]} at {result["img_size"]} px, keep {result["keep"]} (training-free), learned at '
            f'target {result["learned_target"]} (untrained), tome-block r = {result["tome_block_r"]}; '
            f'{result["device"]}, {result["threads"]} threads, median of {result["repeats"]} interleaved repeats'
            + (", CPU time of one thread (development estimate)" if result.get("clock") == "cpu" else "")
            + f', {result.get("allocator", "system")} host allocator')
    lines = [head, "", "| method | batch | dtype | dense ms | pruned ms | speed-up | FLOP ratio | efficiency | "
             "per round q1 / q3 | PKR | ceiling ms | ceiling efficiency | of ceiling |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f'| {r["method"]} | {r["batch"]} | {r["dtype"]} | not run: {r["error"]} | | | | | | | | | |')
            continue
        lines.append(f'| {r["method"]} | {r["batch"]} | {r["dtype"]} | {r["dense_ms"]:.1f} | {r["pruned_ms"]:.1f} | '
                     f'{r["speedup"]:.2f}x | {r["flops_ratio"]:.2f}x | {r["efficiency"]:.2f} | '
                     f'{r["efficiency_rounds"][0]:.2f} / {r["efficiency_rounds"][2]:.2f} | {r["pkr"]:.3f} | '
                     f'{r["ceiling_ms"]:.1f} | {r["ceiling_efficiency"]:.2f} | {r["of_ceiling"]:.2f} |')
    missed = [k for k, ok in result["checks"].items() if not ok]
    lines += ["", "ceiling: timm's blocks fed the same per-block token counts by slicing, nothing else (the "
              "hardware's share of the FLOP ratio); of ceiling = ceiling ms / pruned ms (the method's own cost); "
              "per round q1 / q3: quartiles of the efficiency of each round (dense and the method timed back to "
              "back), the spread a rerun can show",
              "", f'efficiency bars (>= 0.95 at batch 1, >= 0.9 batched): {len(result["checks"]) - len(missed)} of '
              f'{len(result["checks"])} met' + (f'; missed: {", ".join(missed)}' if missed else "")]
    lines += [f"WARNING: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)


def format_table(result: dict[str, Any]) -> str:
    rows = [("model", result["model"]), ("image", f'{result["img_size"]} px, batch {result["batch"]}'),
            ("schedule", f'{result["keep"]} ({result["policy"]})'),
            ("dense", f'{result["dense_ms"]:.1f} ms  ({result["dense_gmacs"]:.2f} GMACs)'),
            ("pruned", f'{result["pruned_ms"]:.1f} ms  ({result["pruned_gmacs"]:.2f} GMACs, PKR {result["pkr"]:.3f})'),
            ("speed-up", f'{result["speedup"]:.2f}x  (FLOP ratio {result["flops_ratio"]:.2f}x, efficiency {result["efficiency"]:.2f})'),
            *[(f"ragged {mode}", f'{r["pruned_ms"]:.1f} ms, {r["speedup"]:.2f}x, efficiency {r["efficiency"]:.2f} '
               f'(ran {"/".join(r["ran"]) or "unpadded"}, executed FLOP ratio '
               f'{r["flops_ratio_executed"]:.2f}x)')
              for mode, r in result.get("by_ragged", {}).items() if len(result["by_ragged"]) > 1],
            ("device", f'{result["device"]}, {result["threads"]} threads, {result["dtype"]}, '
                       f'{result.get("allocator", "system")} host allocator')]
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
    if getattr(args, "methods", None):
        if args.spread:
            raise ValueError("--spread is for one policy (--policy random-bernoulli), not --methods")
        return _run_methods(args)
    warmup = 3 if args.warmup is None else args.warmup
    repeats = 15 if args.repeats is None else args.repeats
    ragged = tuple(comma_list("--ragged", args.ragged, str, unique=True, allowed=RAGGED_MODES))
    if args.spread and args.policy != "random-bernoulli":
        raise ValueError("--spread varies random-bernoulli's keep probability per sample: add --policy random-bernoulli")
    if not 0.0 <= args.spread < 1.0:
        raise ValueError(f"--spread must be in [0, 1), got {args.spread}")
    result = run_speed_bench(model=args.model, img_size=args.img_size, keep=args.keep, batch=args.batch,
                             policy=args.policy, warmup=warmup, repeats=repeats, device=args.device,
                             threads=args.threads, seed=args.seed, progress=not args.json, allocator=args.allocator,
                             ragged=ragged, spread=args.spread)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def _one_ragged_mode(text: str) -> str:
    modes = comma_list("--ragged", text, str, unique=True, allowed=RAGGED_MODES)
    if len(modes) > 1:
        raise ValueError("--ragged: give one mode with --methods (side-by-side modes are for one --policy)")
    return modes[0]


def _run_methods(args) -> int:
    """`--methods`: the table of every listed method at every `--batches` x `--dtype`."""
    try:
        methods = resolve_methods(args.methods)
    except ValueError as err:
        raise ValueError(f"--methods: {err}") from None
    batches = comma_list("--batches", args.batches, int)
    for b in batches:
        check_int("--batches", b, 1)
    dtypes = comma_list("--dtype", args.dtype, str, allowed=tuple(DTYPES))
    warmup = args.warmup if args.warmup is not None else 1
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    clock = "cpu" if getattr(args, "cpu_time", False) else "wall"
    if clock == "cpu" and (args.threads != 1 or check_device("--device", args.device).type != "cpu"):
        raise ValueError("--cpu-time times one CPU thread: add --threads 1 (and --device cpu)")
    result = run_methods_bench(methods, tuple(batches), tuple(dtypes), model=args.model, img_size=args.img_size,
                               keep=args.keep, warmup=warmup, repeats=repeats, device=args.device,
                               threads=args.threads, seed=args.seed, progress=not args.json, clock=clock,
                               allocator=args.allocator, ragged=_one_ragged_mode(args.ragged))
    print(json.dumps(result) if args.json else format_methods_table(result))
    return 0
