"""`patchprune bench mllm`: prefill latency of a LLaVA-style model, dense vs visual tokens pruned.

Model (`patchprune.hf.bench_llava`, random weights, fp32): SigLIP-so400m-like tower at 384 px
(729 tokens per frame) + Qwen2-0.5B-like language model; `--tiny` swaps in a seconds-fast model of
the same structure. Sections: batch 1 / 4 x image (1 frame) / video (4 frames, one placeholder run
per frame); every sample has `--text` text tokens around its images (different images per sample).

What is timed (ms, median of `--repeats` interleaved rounds after `--warmup` untimed ones,
`metrics/timing.py`; one global warm-up first runs every kind of call once):
- vision: the model's `get_image_features` (tower + projector on all N tokens), one call per frame
  of a pool of 8 distinct random frames (`SECTION_FRAMES` builds every sample from them, all samples
  of a batch different), computed once and reused by every section, method and ratio; a section's
  vision time is the sum over its frames (single measurements after one warm-up call).
- selection: `VisualTokenPruner.select_tokens` for every method and ratio on the section's
  features (attention-based methods include recomputing the scoring layer's attention).
- prefill: the model's own forward over the whole prompt given the (pruned) image features
  (`mm_encoder_outputs`, `logits_to_keep=1`): embeddings, scatter, every decoder layer, the LM head
  on the last position; no KV cache kept beyond the call. Its cost depends only on K, so the pruned
  prefill is timed once per ratio (with EVTP's tokens) and shared by every method's row.
- TTFT (batch-1 sections, dense and 20 %): vision + EVTP selection + `generate(max_new_tokens=1)`
  on the prepared inputs; dense: vision + generate.
FLOP ratios come from `patchprune.metrics.mllm_flops` (MACs) over the same components as the
latency they sit next to: prefill vs prefill; end to end (vision + selection + prefill) vs vision +
selector + projector + prefill. The prefill also gets a causal FLOP ratio (`prefill_flop_ratio_causal`,
attention over each query's prefix only, `mllm_macs(..., causal=True)`): the prompts have no padding,
so the model's SDPA runs with `is_causal=True` and skips the upper triangle; the full-n x n ratio (the
paper's and FlopCounterMode's convention, the one the must-show check uses) overstates what a causal
kernel can gain where attention is a large share of the dense prefill (the video sections).
"""
from __future__ import annotations

import json
import platform
from typing import Any

from patchprune.cli import CommandGroups, handler
from patchprune.validate import comma_list

RATIOS = (0.05, 0.1, 0.2)
SECTIONS = {"image-b1": (1, 1), "image-b4": (4, 1), "video-b1": (1, 4), "video-b4": (4, 4)}  # (batch, frames)
# Frames of every sample, from a pool of 8 distinct frames encoded once: every sample of a batch differs.
SECTION_FRAMES = {"image-b1": [[0]], "image-b4": [[0], [1], [2], [3]], "video-b1": [[4, 5, 6, 7]],
                  "video-b4": [[4, 5, 6, 7], [0, 1, 2, 3], [1, 2, 3, 4], [5, 6, 7, 0]]}
CHECK_METHOD, CHECK_RATIO = "evtp", 0.2


def _prompt(model: Any, batch: int, frames: int, text: int, seed: int):
    """(input_ids, attention_mask) of `batch` samples with `frames` placeholder runs each (no padding
    needed), on the model's device."""
    from patchprune.hf import llava_prompt

    vc = model.config.vision_config
    n = (vc.image_size // vc.patch_size) ** 2
    ids, mask = llava_prompt([frames] * batch, n, model.config.image_token_id, [text] * batch, padding_side="left",
                             seed=seed)
    return ids.to(model.device), mask.to(model.device)



def encode_pool(model: Any, frames: list[int], keep_hidden: bool, seed: int = 0) -> tuple[dict, dict]:
    """Features of each distinct frame (random pixels, seeded per frame) and the ms of its own
    `get_image_features` call: computed once, reused by every section, method and ratio."""
    import time

    import torch

    from patchprune.hf.families import resolve_family
    from patchprune.hf.features import encode_images
    from patchprune.metrics.timing import synchronize

    family = resolve_family(model)
    size = model.config.vision_config.image_size
    pixels = {f: torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed * 1000 + f)
                             ).to(model.device) for f in frames}
    encode_images(model, family, pixels[frames[0]], keep_hidden=keep_hidden)  # warm-up, not timed
    feats, times = {}, {}
    for f in frames:
        synchronize(model.device)
        t0 = time.perf_counter()
        feats[f] = encode_images(model, family, pixels[f], keep_hidden=keep_hidden)
        synchronize(model.device)
        times[f] = (time.perf_counter() - t0) * 1e3
    return feats, times


def _gather(pool: dict, order: list[int]):
    """One ImageFeatures of the frames `order` (placeholder order)."""
    import torch

    from patchprune.hf.features import ImageFeatures

    parts = [pool[f] for f in order]
    hidden = None
    if parts[0].hidden is not None:
        hidden = tuple(torch.cat([p.hidden[i] for p in parts]) for i in range(len(parts[0].hidden)))
    return ImageFeatures(torch.cat([p.vision for p in parts]), torch.cat([p.projected for p in parts]),
                         hidden=hidden, feature_layer=parts[0].feature_layer)


def run_section(model: Any, spec: Any, name: str, methods: list[str], ratios: tuple[float, ...], text: int,
                repeats: int, warmup: int, seed: int, ttft: bool, pool: tuple[dict, dict]) -> dict[str, Any]:
    """One section: selection per method x ratio, prefill dense vs every ratio, TTFT (vision from `pool`)."""
    import torch

    from patchprune.metrics.timing import time_side_by_side
    from patchprune.hf import VisualTokenPruner
    from patchprune.metrics.mllm_flops import mllm_macs
    from patchprune.select import budget

    batch, frames = SECTIONS[name]
    device = model.device
    ids, mask = _prompt(model, batch, frames, text, seed)
    pruners = {m: VisualTokenPruner(model, m, 1.0, padding_side="left") for m in methods + [CHECK_METHOD]}
    order = [f for sample in SECTION_FRAMES[name] for f in sample]
    feats = _gather(pool[0], order)
    vision_times = [sum(pool[1][f] for f in sample) for sample in SECTION_FRAMES[name]]
    vision_ms = sum(vision_times)
    N = feats.tokens_per_image
    mask_bool = mask.bool()
    per_sample = torch.full((batch,), frames, dtype=torch.long)
    text_tokens = ids.shape[1] - frames * N  # every sample has the same length (no padding)

    def prepared(ratio: float, method: str = CHECK_METHOD):
        p = pruners[method]
        ks = p.keep_counts(per_sample, N, ratio)
        kept, index = p.select_tokens(p.with_attention(feats), ks)
        prompt = p.rebuild(ids, mask_bool, ks, N)
        from patchprune.hf.pruner import PrunedInputs

        return PrunedInputs(prompt.input_ids, prompt.attention_mask, kept, ks, index).model_kwargs()

    inputs = {"dense": prepared(1.0), **{f"{r:g}": prepared(r) for r in ratios}}

    def prefill(kw):
        return lambda: model(**kw, logits_to_keep=1)

    prefill_ms = time_side_by_side({k: prefill(kw) for k, kw in inputs.items()}, device, warmup, repeats)
    dense_cost = mllm_macs(spec, text_tokens, frames, None, batch=batch)
    causal_dense = mllm_macs(spec, text_tokens, frames, None, batch=batch, causal=True).prefill
    out: dict[str, Any] = {"batch": batch, "frames": frames, "tokens_per_frame": N, "text_tokens": text_tokens,
                           "vision_ms": vision_ms, "vision_ms_per_sample": vision_times,
                           "dense": {"prefill_ms": prefill_ms["dense"], "macs": dense_cost.as_dict(),
                                     "prefill_macs_causal": causal_dense},
                           "ratios": {}}
    for r in ratios:
        k = budget(N, r)
        ks = torch.full((batch * frames,), k, dtype=torch.long)
        sel_ms = time_side_by_side(
            {m: (lambda p=pruners[m]: p.select_tokens(p.with_attention(feats), ks)) for m in methods},
            device, warmup, repeats)
        pre_ms = prefill_ms[f"{r:g}"]
        pruned_prefill = mllm_macs(spec, text_tokens, frames, k, batch=batch).prefill
        row: dict[str, Any] = {
            "k": k, "prefill_ms": pre_ms, "prefill_macs": pruned_prefill,
            "prefill_speedup": prefill_ms["dense"] / pre_ms,
            "prefill_flop_ratio": dense_cost.prefill / pruned_prefill,
            "prefill_flop_ratio_causal": causal_dense / mllm_macs(spec, text_tokens, frames, k, batch=batch,
                                                                  causal=True).prefill, "methods": {}}
        row["prefill_efficiency"] = row["prefill_speedup"] / row["prefill_flop_ratio"]
        row["prefill_efficiency_causal"] = row["prefill_speedup"] / row["prefill_flop_ratio_causal"]
        saved = prefill_ms["dense"] - pre_ms
        for m in methods:
            cost = mllm_macs(spec, text_tokens, frames, k, batch=batch, method=m)
            e2e_dense = vision_ms + prefill_ms["dense"]
            e2e = vision_ms + sel_ms[m] + pre_ms
            row["methods"][m] = {
                "select_ms": sel_ms[m], "select_macs": cost.selector,
                "select_share_of_saving": sel_ms[m] / saved if saved > 0 else None,  # None: nothing saved
                "end_to_end_ms": e2e, "end_to_end_speedup": e2e_dense / e2e,
                "end_to_end_flop_ratio": dense_cost.total / cost.total}
        out["ratios"][f"{r:g}"] = row
    if ttft and batch == 1:
        out["ttft_ms"] = _ttft(model, inputs, vision_ms, out, device, warmup, repeats)
    return out


def _ttft(model: Any, inputs: dict, vision_ms: float, section: dict, device, warmup: int,
          repeats: int) -> dict[str, float]:
    """Time to first token, dense and EVTP at the check ratio (when benchmarked): vision + EVTP
    selection + generate(max_new_tokens=1) on the prepared inputs."""
    from patchprune.metrics.timing import time_side_by_side

    keys = [k for k in ("dense", f"{CHECK_RATIO:g}") if k in inputs]

    def gen(kw):
        return lambda: model.generate(**kw, max_new_tokens=1, do_sample=False)

    ms = time_side_by_side({k: gen(inputs[k]) for k in keys}, device, warmup, repeats)
    res = {}
    for k in keys:
        sel = 0.0 if k == "dense" else section["ratios"][k]["methods"].get(CHECK_METHOD, {}).get("select_ms", 0.0)
        res[k] = vision_ms + sel + ms[k]
    return res


def _warm_up(model: Any, pool: dict, methods: list[str], text: int, seed: int) -> None:
    """One untimed selection per method and one short prefill + generate, so no timed call is the first
    of its kind in the process (the timed calls themselves last seconds: no per-shape warm-up needed)."""
    import torch

    from patchprune.hf import VisualTokenPruner
    from patchprune.hf.pruner import PrunedInputs

    ids, mask = _prompt(model, 1, 1, text, seed)
    feats = _gather(pool, [next(iter(pool))])
    for m in methods + [CHECK_METHOD]:
        p = VisualTokenPruner(model, m, 0.05, padding_side="left")
        ks = p.keep_counts(torch.ones(1, dtype=torch.long), feats.tokens_per_image)
        kept, index = p.select_tokens(p.with_attention(feats), ks)
    prompt = p.rebuild(ids, mask.bool(), ks, feats.tokens_per_image)
    kwargs = PrunedInputs(prompt.input_ids, prompt.attention_mask, kept, ks, index).model_kwargs()
    model(**kwargs, logits_to_keep=1)
    model.generate(**kwargs, max_new_tokens=1, do_sample=False)


def planned_macs(spec: Any, sections: list[str], ratios: tuple[float, ...], repeats: int, warmup: int, text: int,
                 ttft: bool, tokens_per_frame: int) -> float:
    """MACs the run will compute (vision pool + warm-up, prefill and TTFT rounds; selection omitted):
    divided by a measured GMAC/s rate it estimates the run time."""
    from patchprune.metrics.mllm_flops import mllm_macs
    from patchprune.select import budget

    frames = {f for name in sections for sample in SECTION_FRAMES[name] for f in sample}
    one = mllm_macs(spec, 0, 1, None)
    total = (len(frames) + 1) * (one.vision + one.projector)
    rounds = repeats + warmup
    for name in sections:
        batch, n_frames = SECTIONS[name]
        t = text + n_frames  # text plus one separator per frame (llava_prompt)
        dense = mllm_macs(spec, t, n_frames, None, batch=batch).prefill
        pruned = {r: mllm_macs(spec, t, n_frames, budget(tokens_per_frame, r), batch=batch).prefill for r in ratios}
        total += rounds * (dense + sum(pruned.values()))
        if ttft and batch == 1:
            total += rounds * (dense + pruned.get(CHECK_RATIO, 0.0))
    return total


# A pruned prefill cannot beat the causal FLOP ratio by more than this: its GEMMs run at most at the
# dense prefill's FLOP rate (lower on few tokens, docs/benchmarks.md) and the causal count is the least
# attention work a kernel can do. Above it, the dense prefill was slowed by something outside the call.
PREFILL_TRUST = 1.02


def timing_warnings(sections: dict[str, Any]) -> list[str]:
    """One line per section and ratio whose prefill speed-up exceeds PREFILL_TRUST x the causal FLOP
    ratio: that section's dense timing was disturbed, so its speed-ups are inflated."""
    out = []
    for name, sec in sections.items():
        for r, row in sec["ratios"].items():
            if row["prefill_efficiency_causal"] > PREFILL_TRUST:
                out.append(f"[{name}] ratio {r}: prefill speed-up {row['prefill_speedup']:.2f}x is "
                           f"{row['prefill_efficiency_causal']:.2f} x the causal FLOP ratio (> {PREFILL_TRUST}): the "
                           "dense prefill was slowed by something outside the timed call; time again on a quiet machine")
    return out


def must_show(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """EVTP at 20 %: prefill speed-up >= 0.9 x FLOP ratio (full n x n attention, issue 9's bar) and
    >= 0.9 x the causal FLOP ratio (what a causal kernel can gain); selection <= 1 % of the prefill
    time saved."""
    checks = []
    key = f"{CHECK_RATIO:g}"
    for name, sec in sections.items():
        row = sec["ratios"].get(key)
        if row is None or CHECK_METHOD not in row["methods"]:
            continue
        m = row["methods"][CHECK_METHOD]
        for ratio, label in (("prefill_flop_ratio", "FLOP ratio"), ("prefill_flop_ratio_causal", "causal FLOP ratio")):
            bound = 0.9 * row[ratio]
            checks.append({"section": name, "check": f"prefill speed-up >= 0.9 x {label}",
                           "value": row["prefill_speedup"], "bound": bound,
                           "status": "pass" if row["prefill_speedup"] >= bound else "miss"})
        checks.append({"section": name, "check": "selection <= 1% of the prefill time saved",
                       "value": m["select_share_of_saving"], "bound": 0.01,
                       "status": "pass" if (m["select_share_of_saving"] is not None
                                            and m["select_share_of_saving"] <= 0.01) else "miss"})
    return checks


def run_bench(sections: list[str], methods: list[str] | None = None, ratios: tuple[float, ...] = RATIOS,
              repeats: int = 2, warmup: int = 0, text: int = 32, tiny: bool = False, seed: int = 0,
              ttft: bool = True, device: Any = "cpu") -> dict[str, Any]:
    """Build the model, run every section, return the report (see the module docstring). device:
    where the model runs and is timed ("cpu", the default and the recorded figures; "cuda" / "cuda:N")."""
    import torch

    from patchprune.hf import bench_llava
    from patchprune.metrics.mllm_flops import spec_from_llava_config
    from patchprune.select import available_methods, method_spec

    from patchprune.validate import check_device

    device = check_device("device", device)
    methods = list(methods) if methods else available_methods()
    model = bench_llava(tiny=tiny, seed=seed).to(device)
    spec = spec_from_llava_config(model.config)
    planned = planned_macs(spec, sections, ratios, repeats, warmup, text, ttft, spec.tokens_per_frame)
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"},
        "config": {"tiny": tiny, "sections": sections, "methods": methods, "ratios": list(ratios),
                   "repeats": repeats, "warmup": warmup, "text_tokens_per_sample": text, "seed": seed,
                   "planned_tmacs": planned / 1e12, "dtype": "float32", "model": "tiny LLaVA" if tiny else
                   "SigLIP-so400m-like 384px (729 tokens) + Qwen2-0.5B-like, random weights"},
        "units": {"time": "ms (median)", "cost": "MACs (1 MAC = 2 FLOPs)"},
        "sections": {}}
    with torch.inference_mode():
        frames = sorted({f for name in sections for sample in SECTION_FRAMES[name] for f in sample})
        pool = encode_pool(model, frames, any(method_spec(m).needs_attention for m in methods), seed)
        _warm_up(model, pool[0], methods, text, seed)
        for i, name in enumerate(sections):
            result["sections"][name] = run_section(model, spec, name, methods, ratios, text, repeats, warmup,
                                                   seed + i, ttft, pool)
    result["must_show"] = must_show(result["sections"])
    result["warnings"] = timing_warnings(result["sections"])
    return result


def _print_table(res: dict[str, Any]) -> None:
    cfg, mach = res["config"], res["machine"]
    where = f"{mach['threads']} threads" if mach.get("device", "cpu") == "cpu" else mach["device"]
    print(f"bench mllm: {cfg['model']}; {where}, fp32, medians of {cfg['repeats']} "
          f"(warm-up {cfg['warmup']}); costs in MACs")
    for name, sec in res["sections"].items():
        print(f"\n[{name}] batch {sec['batch']} x {sec['frames']} frame(s), N={sec['tokens_per_frame']}, "
              f"text {sec['text_tokens']}: vision {sec['vision_ms']:.0f} ms, dense prefill "
              f"{sec['dense']['prefill_ms']:.0f} ms")
        if "ttft_ms" in sec:
            print("  TTFT ms: " + ", ".join(f"{k} {v:.0f}" for k, v in sec["ttft_ms"].items()))
        print(f"  {'ratio':>5} {'K':>4} {'prefill ms':>10} {'speed-up':>8} {'FLOP ratio':>10} {'causal':>6} | "
              f"{'method':<10} "
              f"{'select ms':>9} {'sel/saved':>9} {'e2e x':>6} {'e2e FLOP x':>10}")
        for r, row in sec["ratios"].items():
            for j, (m, v) in enumerate(row["methods"].items()):
                head = (f"  {r:>5} {row['k']:>4} {row['prefill_ms']:>10.1f} {row['prefill_speedup']:>8.2f} "
                        f"{row['prefill_flop_ratio']:>10.2f} {row['prefill_flop_ratio_causal']:>6.2f}") \
                    if j == 0 else " " * 50
                share = "n/a" if v["select_share_of_saving"] is None else f"{v['select_share_of_saving']:.4f}"
                print(f"{head} | {m:<10} {v['select_ms']:>9.2f} {share:>9} "
                      f"{v['end_to_end_speedup']:>6.2f} {v['end_to_end_flop_ratio']:>10.2f}")
    print()
    for c in res["must_show"]:
        value = "n/a" if c["value"] is None else f"{c['value']:.4f}"
        print(f"{c['status'].upper():4} [{c['section']}] {c['check']}: {value} (bound {c['bound']:.4f})")
    for w in res.get("warnings", []):
        print(f"WARNING: {w}")


def _run(args: Any) -> int:
    sections = comma_list("--sections", args.sections, str) or list(SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    ratios = tuple(comma_list("--ratios", args.ratios, float)) or RATIOS
    if any(not 0 < r < 1 for r in ratios):
        raise ValueError(f"--ratios must lie in (0, 1), got {args.ratios}")
    if args.repeats < 1 or args.warmup < 0 or args.text < 0:
        raise ValueError("--repeats must be >= 1, --warmup >= 0 and --text >= 0")
    import torch

    from patchprune.select import method_spec

    from patchprune.validate import check_device

    methods = comma_list("--methods", args.methods, str) or None
    for m in methods or []:
        method_spec(m)  # ValueError listing the available methods
    device = check_device("--device", args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plan:
        from patchprune.hf.factory import bench_llava_config
        from patchprune.metrics.mllm_flops import spec_from_llava_config

        spec = spec_from_llava_config(bench_llava_config(args.tiny))
        tmacs = planned_macs(spec, sections, ratios, args.repeats, args.warmup, args.text, not args.no_ttft,
                             spec.tokens_per_frame) / 1e12
        print(json.dumps({"planned_tmacs": tmacs, "minutes_at": {f"{g} GMAC/s": tmacs * 1e3 / g / 60
                                                                  for g in (30, 40, 50, 60)}}))
        return 0
    res = run_bench(sections, methods, ratios, repeats=args.repeats, warmup=args.warmup, text=args.text,
                    tiny=args.tiny, seed=args.seed, ttft=not args.no_ttft, device=device)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print_table(res)
    return 0


def register(groups: CommandGroups) -> None:
    """Add `patchprune bench mllm` (heavy imports happen in the handler)."""
    p = groups.bench.add_parser("mllm", help="LLaVA-style prefill latency and TTFT, dense vs visual tokens pruned")
    p.add_argument("--sections", default=None, help=f"comma-separated, from {','.join(SECTIONS)} (default: all)")
    p.add_argument("--methods", default=None, help="comma-separated selection methods (default: all registered)")
    p.add_argument("--ratios", default=None, help="comma-separated keep ratios (default 0.05,0.1,0.2)")
    p.add_argument("--repeats", type=int, default=2, help="timed rounds (default 2; the full run takes ~10 min)")
    p.add_argument("--warmup", type=int, default=0,
                   help="untimed rounds per section (default 0: one global warm-up of every kind of call)")
    p.add_argument("--text", type=int, default=32, help="text tokens per sample (default 32)")
    p.add_argument("--no-ttft", action="store_true", help="skip the time-to-first-token runs")
    p.add_argument("--plan", action="store_true", help="print the MACs the run would compute and time estimates; run nothing")
    p.add_argument("--tiny", action="store_true", help="a seconds-fast tiny model (tests, smoke runs)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (default: the recorded figures), cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=handler("patchprune.bench.mllm:_run"))
