"""Do the kept visual tokens land on the referred object? Per selection method and keep ratio.

The mask branch is never pruned, but the LLM only sees the kept tokens: if none of them lies on
the referred object, the <seg> queries must pick it from text and the other objects alone. For
every val key frame (images; for videos every frame of every expression) this runs the trained
run's vision tower and the selection the evaluation runs (`IVSModel.select`), and reports:

- `hit`: share of frames whose target is present where at least one kept token is a target patch
  (a patch is a target patch when at least half of its pixels are in the target mask; for an
  object smaller than that, the patch holding most of it);
- `on_target`: mean share of the kept tokens that are target patches;
- `area`: mean share of all patches that are target patches (what a uniform pick keeps on
  average), and `enrichment` = on_target / area;
- `evtp_lambda`: EVTP's adaptive spatial weight on these frames (`select.evtp.adaptive_lambda` of
  the total variance sigma^2 of the L2-normalised tower features) and the spread of its spatial part
  against the feature part (lambda^2 x the grid coordinates' total variance / sigma^2; above 1 the
  coordinates dominate the joint distances);
- with `--iou` (images): the model's gIoU with that selection over all frames, over the frames
  whose target got a kept token (`giou_hit`) and over those whose target got none (`giou_miss`):
  whether missing the target is what costs accuracy.

    python benchmarks/ivs/target_coverage.py --run RUN --data DATA [--kind image] [--limit 160]
        [--methods random,kcenter,...] [--ratios 0.05,0.1,0.2] [--iou] [--json OUT.json]
    python benchmarks/ivs/target_coverage.py --plot OUT.png A.json B.json ...   (mean over the files)

A method may name an EVTP ablation rung, `evtp/kcenter`, `evtp/spatial`, `evtp/adaptive` (the
selector option `ablation=`, as `bench ivs` Table 4 runs them).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor

METHODS = ("random", "kcenter", "divprune", "tome", "visionzip", "vispruner", "evtp")
RATIOS = (0.05, 0.1, 0.2)


def target_patches(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """masks bool [B, S, S] -> bool [B, N] target patches (>= half covered; else the most covered
    patch of a non-empty mask)."""
    B = masks.shape[0]
    share = torch.nn.functional.adaptive_avg_pool2d(masks.float()[:, None], grid).flatten(1)  # [B, N]
    on = share >= 0.5
    small = ~on.any(1) & (share.amax(1) > 0)
    if small.any():
        on[small, share[small].argmax(1)] = True
    return on.view(B, -1)


def frames_of(items, kind: str) -> list[tuple[int, int]]:
    """(item, key frame) pairs: every image; every frame of every video expression."""
    if kind == "image":
        return [(i, 0) for i in range(len(items))]
    return [(i, t) for i, it in enumerate(items) for t in range(it.frames.shape[0])]


def coverage(run: Path, data: Path, kind: str = "image", limit: int | None = 160,
             methods: tuple[str, ...] = METHODS, ratios: tuple[float, ...] = RATIOS, batch: int = 16,
             iou: bool = False, seed: int = 0) -> dict[str, dict]:
    """{"cells": {"method@ratio": {hit, on_target, area, enrichment, frames[, giou, giou_hit,
    giou_miss]}}, "evtp_lambda": {sigma2, lambda, spatial_over_feature_spread}} over the val split
    (iou: run the whole model as `eval ivs` does; seed: of the random method)."""
    from patchprune.ivs.data import load_items, make_batch
    from patchprune.ivs.run import load_run

    model, tok, config, _ = load_run(run, None)
    if iou and kind != "image":
        raise ValueError("--iou is for images (video J&F needs every frame of a clip; use `eval ivs`)")
    items = load_items(data, kind, "val", config.img_size, limit)
    pairs = frames_of(items, kind)
    sums: dict[str, dict[str, float]] = {}
    lam_rows: list[Tensor] = []
    need_attention = any(m.partition("/")[0] in ("visionzip", "vispruner", "attention") for m in methods)
    with torch.no_grad():
        for s in range(0, len(pairs), batch):
            chunk = pairs[s:s + batch]
            b, masks, present = make_batch([items[i] for i, _ in chunk], [t for _, t in chunk], tok, config.ref_frames)
            vision, attn = model.encode(b.key, need_attention)
            lam_rows.append(spatial_weight(vision, config.grid))
            target = target_patches(masks, config.grid)[present]
            area = target.float().mean(1)
            for m in methods:
                for r in ratios:
                    name, opts = method_options(m, seed)
                    acc = sums.setdefault(f"{m}@{r:g}", {"hit": 0.0, "on_target": 0.0, "area": 0.0, "frames": 0,
                                                          "iou": 0.0, "iou_hit": 0.0, "iou_miss": 0.0})
                    if iou:
                        out = model(b, name, r, **opts)
                        index = out.kept_index[:len(chunk)]
                        pred, _ = out.predict(masks.shape[-2:])
                        per = sample_ious(pred, masks)[present]
                    else:
                        _, index = model.select(vision, attn, name, r, **opts)
                    kept_on = target.gather(1, index[present])  # [b, K] kept token is a target patch
                    hit = kept_on.any(1)
                    if iou:
                        acc["iou"] += float(per.sum())
                        acc["iou_hit"] += float(per[hit].sum())
                        acc["iou_miss"] += float(per[~hit].sum())
                    acc["hit"] += float(hit.sum())
                    acc["on_target"] += float(kept_on.float().mean(1).sum())
                    acc["area"] += float(area.sum())
                    acc["frames"] += int(present.sum())
    out = {}
    for key, acc in sums.items():
        n = max(acc["frames"], 1)
        row = {k: round(acc[k] / n, 4) for k in ("hit", "on_target", "area")}
        row["enrichment"] = round(row["on_target"] / row["area"], 3) if row["area"] else float("nan")
        if iou:
            hits = acc["hit"]
            row["giou"] = round(acc["iou"] / n, 4)
            row["giou_hit"] = round(acc["iou_hit"] / hits, 4) if hits else None
            row["giou_miss"] = round(acc["iou_miss"] / (n - hits), 4) if n - hits else None
        out[key] = {**row, "frames": acc["frames"]}
    lam = torch.cat(lam_rows).mean(0)  # over frames
    return {"cells": out, "evtp_lambda": {name: round(float(v), 4) for name, v in
                                          zip(("sigma2", "lambda", "spatial_over_feature_spread"), lam)}}


def method_options(method: str, seed: int) -> tuple[str, dict]:
    """(selection method, its options) of a method entry: "random" gets the seed, "evtp/<rung>"
    the EVTP ablation rung."""
    name, _, rung = method.partition("/")
    if rung:
        if name != "evtp":
            raise ValueError(f"{method!r}: only evtp has ablation rungs (evtp/kcenter, evtp/spatial, evtp/adaptive)")
        return name, {"ablation": rung}
    return name, ({"seed": seed} if name == "random" else {})


def spatial_weight(vision: Tensor, grid: tuple[int, int]) -> Tensor:
    """[F, 3] per frame: sigma^2 (total variance of the L2-normalised features), EVTP's lambda, and
    lambda^2 var(p) / sigma^2 (spread of the weighted coordinates over that of the features)."""
    from patchprune.select.base import grid_coordinates
    from patchprune.select.evtp import adaptive_lambda

    x = torch.nn.functional.normalize(vision.float(), dim=-1)
    var = (x - x.mean(1, keepdim=True)).square().sum(-1).mean(1)
    lam = adaptive_lambda(var, x.shape[-1])
    p = grid_coordinates(torch.arange(vision.shape[1])[None], grid)[0]
    p_var = (p - p.mean(0)).square().sum(-1).mean()
    return torch.stack([var, lam, lam.square() * p_var / var], 1)


def sample_ious(pred: Tensor, gt: Tensor) -> Tensor:
    """Per-sample IoU of bool masks [B, H, W], as `eval ivs` counts it for gIoU (`metrics.refer`)."""
    from patchprune.metrics.refer import ReferMeter

    meter = ReferMeter()
    return torch.tensor([meter.update(p.numpy(), g.numpy()) for p, g in zip(pred, gt)])


def mean_cells(results: list[dict]) -> dict[str, dict[str, float]]:
    """Per cell, the mean of every field over several `--json` results (e.g. one per seed)."""
    out: dict[str, dict[str, float]] = {}
    for key in results[0]["cells"]:
        rows = [r["cells"][key] for r in results if key in r["cells"]]
        fields = [f for f in rows[0] if f != "frames"]
        values = {f: [v[f] for v in rows if v.get(f) is not None] for f in fields}
        out[key] = {f: (sum(vs) / len(vs) if vs else None) for f, vs in values.items()}  # None: no run has it
    return out


def plot(results: list[dict], path: Path) -> None:
    """Hit rate and enrichment per method (bars per ratio), mean over `results`, one panel row per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({r["kind"] for r in results})
    fig, axes = plt.subplots(len(kinds), 2, figsize=(11, 3.4 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds):
        group = [r for r in results if r["kind"] == kind]
        cells = mean_cells(group)
        methods = list(dict.fromkeys(k.split("@")[0] for k in cells))
        ratios = list(dict.fromkeys(k.split("@")[1] for k in cells))
        width = 0.8 / len(ratios)
        for ax, field, label in ((row[0], "hit", "share of frames with a kept token on the target"),
                                 (row[1], "enrichment", "kept share on target / target area")):
            for j, r in enumerate(ratios):
                xs = [i + (j - (len(ratios) - 1) / 2) * width for i in range(len(methods))]
                ax.bar(xs, [cells[f"{m}@{r}"][field] for m in methods], width, label=f"{float(r) * 100:g} %")
            ax.set_xticks(range(len(methods)), methods, rotation=20)
            ax.set_title(f"{kind} ({len(group)} run(s)): {label}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        row[0].set_ylim(0, 1.05)
        row[0].legend(fontsize=8, title="tokens kept", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plot", type=Path, default=None, metavar="OUT.png",
                    help="plot the --json results given as positional arguments instead of measuring")
    ap.add_argument("results", nargs="*", type=Path, help="with --plot: result files written by --json")
    ap.add_argument("--run", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--kind", choices=("image", "video"), default="image")
    ap.add_argument("--limit", type=int, default=None, help="val expressions (default: all)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS))
    ap.add_argument("--iou", action="store_true", help="also the model's gIoU, split by hit / miss (images)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random method")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    a = ap.parse_args()
    if a.plot is not None:
        if not a.results:
            raise SystemExit("target_coverage: --plot needs result files written by --json")
        plot([json.loads(f.read_text()) for f in a.results], a.plot)
        print(f"wrote {a.plot}")
        return
    if a.run is None or a.data is None:
        raise SystemExit("target_coverage: --run and --data are required (or --plot with result files)")
    torch.set_num_threads(a.threads)
    try:
        from patchprune.validate import comma_list

        res = coverage(a.run, a.data, a.kind, a.limit, tuple(comma_list("--methods", a.methods, str, unique=True)),
                       tuple(comma_list("--ratios", a.ratios, float, unique=True)), iou=a.iou, seed=a.seed)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"target_coverage: {err}") from None
    extra = ("giou", "giou_hit", "giou_miss") if a.iou else ()
    print(f"{'method@ratio':<16} {'hit':>6} {'on_target':>9} {'area':>6} {'enrich':>7} {'frames':>6}"
          + "".join(f" {k:>9}" for k in extra))
    lam = res["evtp_lambda"]
    for key, row in res["cells"].items():
        print(f"{key:<16} {row['hit']:>6.3f} {row['on_target']:>9.3f} {row['area']:>6.3f} {row['enrichment']:>7.2f} "
              f"{row['frames']:>6}" + "".join(" " + ("      n/a" if row[k] is None else f"{row[k]:>9.3f}") for k in extra))
    print("EVTP's adaptive weight on these frames: " + ", ".join(f"{k} {v:.3f}" for k, v in lam.items()))
    if a.json:
        a.json.write_text(json.dumps({"run": str(a.run), "data": str(a.data), "kind": a.kind, "limit": a.limit,
                                      **res}, indent=1))


if __name__ == "__main__":
    main()
