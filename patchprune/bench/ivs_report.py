"""Tables, claim checks and plots of `patchprune bench ivs` (from its results.csv records).

Laid out like the EVTP paper: Table 1 (image gIoU / cIoU), Table 2 (video J / F / J&F), Table 3
(GMACs per component, FLOP ratio and measured speed-up per ratio), Table 4 (the EVTP ablation
ladder), Fig. 3 (coverage radius against accuracy over methods x ratios, Pearson / Spearman), the
instruction-swap control and the paper's claims checked as pass / miss. Accuracy is the mean +- std
(sample std, n-1) over replicate seeds; speed-ups are medians of per-round ratios (dense time /
pruned time of the same interleaved round).
"""
from __future__ import annotations

import csv
import statistics
import textwrap
from pathlib import Path
from typing import Any, Iterable

MAIN_METRIC = {"image": "giou", "video": "jf"}
METRIC_NAMES = {"giou": "gIoU", "ciou": "cIoU", "j": "J", "f": "F", "jf": "J&F"}
COMPONENT_ORDER = ("vision", "selector", "projector", "perceiver", "llm", "mask_branch")
LADDER = (("kcenter", "k-center"), ("spatial", "+ spatial coordinates"), ("adaptive", "+ adaptive lambda"),
          ("full", "+ initialisation (EVTP)"))
TIE = 1e-6  # metric differences below this are ties (float summation order), not misses
CLAIM_RATIO = 0.1
CLAIM_SHARE = 0.95
DENSE_GIOU_TARGET = 0.6


def _stats(values: Iterable[float | None]) -> dict[str, Any]:
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}


def aggregate(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """{(kind, method, ratio, variant): {metric: {mean, std, n}, "gmacs": {...}, "k": ...}} over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["kind"], r["method"], float(r["ratio"]), r.get("variant") or ""), []).append(r)
    out = {}
    for key, rs in groups.items():
        kind = key[0]
        agg: dict[str, Any] = {m: _stats(r.get(m) for r in rs) for m in (*METRIC_NAMES, "coverage_radius")}
        agg["seeds"] = sorted(int(r["seed"]) for r in rs)
        agg["k"] = rs[0].get("kept_tokens_per_frame")
        agg["samples"] = rs[0].get("samples")
        comps = sorted({c for r in rs for c in (r.get("gmacs") or {})}, key=_component_rank)
        agg["gmacs"] = {c: _stats((r.get("gmacs") or {}).get(c) for r in rs)["mean"] for c in comps}
        agg["kind"] = kind
        out[key] = agg
    return out


def _limit(limit: int | None) -> str:
    """A sample limit as the README prints it: "all" or "first N"."""
    return "all" if limit is None else f"first {limit}"


def _component_rank(name: str) -> tuple[int, str]:
    if name == "total":
        return (len(COMPONENT_ORDER) + 1, name)
    return (COMPONENT_ORDER.index(name) if name in COMPONENT_ORDER else len(COMPONENT_ORDER), name)


def fmt(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def _ratios(agg: dict, kind: str, variant: str = "") -> list[float]:
    return sorted({k[2] for k in agg if k[0] == kind and k[3] == variant and k[1] != "dense"})


def _methods(agg: dict, kind: str) -> list[str]:
    seen: list[str] = []
    for k in agg:
        if k[0] == kind and k[3] == "" and k[1] != "dense" and k[1] not in seen:
            seen.append(k[1])
    return seen


# ---- Tables 1-2: accuracy --------------------------------------------------------------------------


def accuracy_rows(agg: dict, kind: str) -> list[dict[str, Any]]:
    """Rows of Table 1 (image) / Table 2 (video): dense, then every ratio x method."""
    metrics = ("giou", "ciou") if kind == "image" else ("j", "f", "jf")
    main = MAIN_METRIC[kind]
    dense = agg.get((kind, "dense", 1.0, ""))
    dense_main = dense[main]["mean"] if dense else None
    rows = []
    keys = ([(kind, "dense", 1.0, "")] if dense else []) + [(kind, m, r, "") for r in _ratios(agg, kind)
                                                           for m in _methods(agg, kind)]
    for key in keys:
        a = agg.get(key)
        if a is None:
            continue
        row = {"ratio": key[2], "method": "dense" if key[1] == "dense" else key[1], "k_per_frame": a["k"],
               "gmacs_total": a["gmacs"].get("total"), "seeds": len(a["seeds"]), "samples": a["samples"]}
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = a[m]["mean"], a[m]["std"]
        row["coverage_radius"] = a["coverage_radius"]["mean"]
        row[f"{main}_share_of_dense"] = (a[main]["mean"] / dense_main if dense_main and a[main]["mean"] is not None
                                         else None)
        row["_stats"] = {m: a[m] for m in metrics}
        rows.append(row)
    return rows


def accuracy_markdown(rows: list[dict[str, Any]], kind: str) -> str:
    metrics = ("giou", "ciou") if kind == "image" else ("j", "f", "jf")
    main = MAIN_METRIC[kind]
    best = _best_per_ratio(rows, main)
    head = ["ratio", "method", "K/frame", "GMACs"] + [METRIC_NAMES[m] for m in metrics] + \
           [f"{METRIC_NAMES[main]} / dense", "coverage radius"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [("100 %" if row["method"] == "dense" else f"{row['ratio'] * 100:g} %"), row["method"],
                 _num(row["k_per_frame"], 0), _num(row["gmacs_total"], 3)]
        for m in metrics:
            text = fmt(row["_stats"][m])
            if m == main and (row["ratio"], row["method"]) in best:
                text = f"**{text}**"
            cells.append(text)
        cells += [_num(row[f"{main}_share_of_dense"], 3), _num(row["coverage_radius"], 3)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _best_per_ratio(rows: list[dict[str, Any]], main: str) -> set[tuple[float, str]]:
    best: dict[float, float] = {}
    for r in rows:
        if r["method"] != "dense" and r[f"{main}_mean"] is not None:
            best[r["ratio"]] = max(best.get(r["ratio"], float("-inf")), r[f"{main}_mean"])
    return {(r["ratio"], r["method"]) for r in rows
            if r["method"] != "dense" and r[f"{main}_mean"] is not None and r[f"{main}_mean"] == best[r["ratio"]]}


def _num(v: Any, digits: int) -> str:
    if v is None:
        return "n/a"
    return f"{float(v):.{digits}f}" if digits else f"{float(v):.0f}"


# ---- Table 3: cost and speed -------------------------------------------------------------------------


def cost_speed_rows(records: list[dict[str, Any]], agg: dict, kind: str) -> list[dict[str, Any]]:
    """Per ratio (dense first): GMACs per component (EVTP), FLOP ratio, latency per component
    (median of the speed rounds) and the measured speed-up (median of per-round dense / pruned)."""
    speed = [r for r in records if r["kind"] == kind and str(r.get("variant") or "").startswith("speed")]
    rounds: dict[str, dict[float, dict[str, float]]] = {}
    for r in speed:
        rounds.setdefault(r["variant"], {})[float(r["ratio"])] = r.get("latency_ms") or {}
    dense = agg.get((kind, "dense", 1.0, ""))
    if dense is None:
        return []
    dense_total = dense["gmacs"].get("total")
    ratios = sorted({float(r["ratio"]) for r in speed if r["method"] != "dense"} | set(_ratios(agg, kind)))
    rows = []
    for ratio in [1.0, *ratios]:
        a = dense if ratio == 1.0 else agg.get((kind, "evtp", ratio, ""))
        row: dict[str, Any] = {"ratio": ratio, "method": "dense" if ratio == 1.0 else "evtp",
                               "k_per_frame": a["k"] if a else None}
        gm = a["gmacs"] if a else {}
        for c, v in gm.items():
            row[f"gmacs.{c}"] = v
        row["flop_ratio"] = (dense_total / gm["total"]) if dense_total and gm.get("total") else None
        lat = [rd[ratio] for rd in rounds.values() if ratio in rd]
        comps = sorted({c for d in lat for c in d}, key=_component_rank)
        for c in comps:
            vals = [d[c] for d in lat if d.get(c) is not None]
            row[f"latency_ms.{c}"] = statistics.median(vals) if vals else None
        pairs = [rd[1.0]["total"] / rd[ratio]["total"] for rd in rounds.values()
                 if ratio in rd and 1.0 in rd and rd[ratio].get("total") and rd[1.0].get("total")]
        row["speedup"] = statistics.median(pairs) if pairs else None
        row["speedup_min"] = min(pairs) if pairs else None
        row["speedup_max"] = max(pairs) if pairs else None
        row["rounds"] = len(pairs) if ratio != 1.0 else len(lat)
        rows.append(row)
    return rows


def cost_speed_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no dense cell: nothing to compare)"
    comps = sorted({k.split(".", 1)[1] for r in rows for k in r if k.startswith("gmacs.")}, key=_component_rank)
    lat = sorted({k.split(".", 1)[1] for r in rows for k in r if k.startswith("latency_ms.")}, key=_component_rank)
    head = ["ratio", "K/frame"] + [f"GMACs {c}" for c in comps] + ["FLOP ratio"] + [f"ms {c}" for c in lat] + \
           ["speed-up (min-max)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sp = "1.00" if r["ratio"] == 1.0 else (
            "n/a" if r["speedup"] is None else f"{r['speedup']:.2f} ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})")
        cells = [("100 %" if r["ratio"] == 1.0 else f"{r['ratio'] * 100:g} %"), _num(r["k_per_frame"], 0)]
        cells += [_num(r.get(f"gmacs.{c}"), 4) for c in comps]
        cells.append(_num(r["flop_ratio"], 2))
        cells += [_num(r.get(f"latency_ms.{c}"), 2) for c in lat]
        cells.append(sp)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- Table 4: the EVTP ladder --------------------------------------------------------------------------


def ladder_rows(agg: dict, kinds: Iterable[str]) -> list[dict[str, Any]]:
    rows = []
    ratios = sorted({k[2] for k in agg if k[3].startswith("ladder-")})
    for ratio in ratios:
        for rung, label in LADDER:
            row: dict[str, Any] = {"ratio": ratio, "rung": rung, "label": label}
            for kind in kinds:
                variant = "" if rung == "full" else f"ladder-{rung}"
                a = agg.get((kind, "evtp", ratio, variant))
                row[f"{kind}_{MAIN_METRIC[kind]}"] = a[MAIN_METRIC[kind]] if a else None
                row[f"{kind}_coverage_radius"] = a["coverage_radius"]["mean"] if a else None
            rows.append(row)
    return rows


def ladder_markdown(rows: list[dict[str, Any]], kinds: Iterable[str]) -> str:
    kinds = list(kinds)
    if not rows:
        return "(no ladder cells)"
    head = ["ratio", "rung"] + [f"{k} {METRIC_NAMES[MAIN_METRIC[k]]}" for k in kinds] + \
           [f"{k} coverage radius" for k in kinds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['ratio'] * 100:g} %", r["label"]] + [fmt(r[f"{k}_{MAIN_METRIC[k]}"]) for k in kinds] + \
                [_num(r[f"{k}_coverage_radius"], 3) for k in kinds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- Fig. 3: coverage radius against accuracy ----------------------------------------------------------


def coverage_points(agg: dict, kind: str) -> list[dict[str, Any]]:
    main = MAIN_METRIC[kind]
    return [{"method": k[1], "ratio": k[2], "coverage_radius": a["coverage_radius"]["mean"], main: a[main]["mean"]}
            for k, a in agg.items() if k[0] == kind and k[3] == "" and k[1] != "dense"
            and a["coverage_radius"]["mean"] is not None and a[main]["mean"] is not None]


def correlations(points: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Pearson and Spearman of coverage radius vs the metric: over all points and within each ratio."""
    from scipy import stats

    def corr(pts):
        x = [p["coverage_radius"] for p in pts]
        y = [p[metric] for p in pts]
        if len(pts) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
            return {"n": len(pts), "pearson": None, "spearman": None, "pearson_p": None, "spearman_p": None}
        pr, sr = stats.pearsonr(x, y), stats.spearmanr(x, y)
        return {"n": len(pts), "pearson": float(pr[0]), "pearson_p": float(pr[1]),
                "spearman": float(sr[0]), "spearman_p": float(sr[1])}

    out = {"all": corr(points)}
    for ratio in sorted({p["ratio"] for p in points}):
        out[f"{ratio:g}"] = corr([p for p in points if p["ratio"] == ratio])
    return out


# ---- claims -----------------------------------------------------------------------------------------------


def claims(agg: dict, kinds: Iterable[str]) -> list[dict[str, Any]]:
    """The paper's and the issue's claims as pass / miss / n/a with the numbers behind them."""
    out: list[dict[str, Any]] = []
    dense_img = agg.get(("image", "dense", 1.0, ""))
    evtp10 = agg.get(("image", "evtp", CLAIM_RATIO, ""))
    if dense_img and evtp10 and dense_img["giou"]["mean"]:
        share = evtp10["giou"]["mean"] / dense_img["giou"]["mean"]
        out.append({"claim": f"EVTP at {CLAIM_RATIO * 100:g} % keeps >= {CLAIM_SHARE * 100:g} % of dense gIoU",
                    "status": "pass" if share >= CLAIM_SHARE else "miss",
                    "detail": f"EVTP {fmt(evtp10['giou'])} / dense {fmt(dense_img['giou'])} = {share:.3f}"})
    else:
        out.append({"claim": f"EVTP at {CLAIM_RATIO * 100:g} % keeps >= {CLAIM_SHARE * 100:g} % of dense gIoU",
                    "status": "n/a", "detail": "needs the image dense and EVTP 10 % cells"})
    for kind in kinds:
        main = MAIN_METRIC[kind]
        for ratio in _ratios(agg, kind):
            ev = agg.get((kind, "evtp", ratio, ""))
            base = {m: a for (k, m, r, v), a in agg.items()
                    if k == kind and r == ratio and v == "" and m not in ("dense", "evtp")}
            claim = f"{kind}: EVTP >= every baseline at {ratio * 100:g} % ({METRIC_NAMES[main]})"
            if ev is None or ev[main]["mean"] is None or not base:
                out.append({"claim": claim, "status": "n/a", "detail": "needs EVTP and baseline cells"})
                continue
            above = {m: a for m, a in base.items()
                     if a[main]["mean"] is not None and a[main]["mean"] > ev[main]["mean"] + TIE}
            if not above:
                runner = max(base.items(), key=lambda kv: kv[1][main]["mean"] if kv[1][main]["mean"] is not None
                             else float("-inf"))
                out.append({"claim": claim, "status": "pass",
                            "detail": f"EVTP {fmt(ev[main])}; best baseline {runner[0]} {fmt(runner[1][main])}"})
            else:
                parts = []
                for m, a in sorted(above.items(), key=lambda kv: -kv[1][main]["mean"]):
                    gap = a[main]["mean"] - ev[main]["mean"]
                    spread = max(a[main]["std"] or 0.0, ev[main]["std"] or 0.0)
                    within = " (within one std)" if a[main]["n"] > 1 and gap <= spread else ""
                    parts.append(f"{m} {fmt(a[main])} (+{gap:.3f}{'' if gap >= 5e-4 else f', {gap:.1e}'}){within}")
                out.append({"claim": claim, "status": "miss",
                            "detail": f"EVTP {fmt(ev[main])}; above it: " + ", ".join(parts)})
    if dense_img:
        g = dense_img["giou"]["mean"]
        out.append({"claim": f"dense gIoU on the image set >= {DENSE_GIOU_TARGET}",
                    "status": "pass" if g is not None and g >= DENSE_GIOU_TARGET else "miss",
                    "detail": f"dense {fmt(dense_img['giou'])}"})
    for kind in kinds:
        main = MAIN_METRIC[kind]
        d, s = agg.get((kind, "dense", 1.0, "")), agg.get((kind, "dense", 1.0, "swap"))
        claim = f"{kind}: swapping the instruction for another object's lowers {METRIC_NAMES[main]}"
        if d is None or s is None or d[main]["mean"] is None or s[main]["mean"] is None:
            out.append({"claim": claim, "status": "n/a", "detail": "needs the dense and swap cells"})
            continue
        out.append({"claim": claim, "status": "pass" if s[main]["mean"] < d[main]["mean"] else "miss",
                    "detail": f"dense {fmt(d[main])}, swapped {fmt(s[main])} "
                              f"(drop {d[main]['mean'] - s[main]['mean']:.3f})"})
    for kind in kinds:
        main = MAIN_METRIC[kind]
        spread = {}
        for ratio in _ratios(agg, kind):
            vals = [a[main]["mean"] for (k, m, r, v), a in agg.items()
                    if k == kind and r == ratio and v == "" and m != "dense" and a[main]["mean"] is not None]
            if len(vals) > 1:
                spread[ratio] = max(vals) - min(vals)
        if spread:
            out.append({"claim": f"{kind}: diagnostic, spread of {METRIC_NAMES[main]} across methods (max - min)",
                        "status": "info",
                        "detail": ", ".join(f"{r * 100:g} %: {v:.4f}" for r, v in spread.items())
                                  + " (0 = the choice of tokens does not change a single prediction)"})
        d, fl = agg.get((kind, "dense", 1.0, "")), _floor(agg, kind)
        if d is not None and fl is not None and d[main]["mean"] is not None and fl[main]["mean"] is not None:
            out.append({"claim": f"{kind}: diagnostic, {METRIC_NAMES[main]} with 1 random visual token per frame",
                        "status": "info",
                        "detail": f"dense {fmt(d[main])}, 1 token {fmt(fl[main])} "
                                  f"(drop {d[main]['mean'] - fl[main]['mean']:.3f}; the room the methods compete in)"})
    return out


def _floor(agg: dict, kind: str) -> dict[str, Any] | None:
    return next((a for k, a in agg.items() if k[0] == kind and k[3] == "floor"), None)


def controls_markdown(agg: dict, kinds: Iterable[str]) -> str:
    """Dense against the instruction swap and against one random visual token per frame."""
    lines = ["| set | metric | dense | instruction swapped | drop | 1 token / frame | drop |",
             "|---|---|---|---|---|---|---|"]
    for kind in kinds:
        d = agg.get((kind, "dense", 1.0, ""))
        if d is None:
            continue
        s, fl = agg.get((kind, "dense", 1.0, "swap")), _floor(agg, kind)
        for m in (("giou", "ciou") if kind == "image" else ("j", "f", "jf")):
            row = [kind, METRIC_NAMES[m], fmt(d[m])]
            for c in (s, fl):
                drop = None if c is None or d[m]["mean"] is None or c[m]["mean"] is None else d[m]["mean"] - c[m]["mean"]
                row += [fmt(c[m]) if c else "n/a", _num(drop, 3)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ---- plots ------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_coverage(points_by_kind: dict[str, list[dict]], corr_by_kind: dict[str, dict], path: Path,
                  caption: str) -> Path:
    plt = _plt()
    kinds = [k for k in points_by_kind if points_by_kind[k]]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5.5 * max(1, len(kinds)), 4.4), squeeze=False)
    markers = {0.05: "o", 0.1: "s", 0.2: "^"}
    for ax, kind in zip(axes[0], kinds):
        main = MAIN_METRIC[kind]
        methods = sorted({p["method"] for p in points_by_kind[kind]})
        colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
        for p in points_by_kind[kind]:
            ax.scatter(p["coverage_radius"], p[main], color=colours[p["method"]], marker=markers.get(p["ratio"], "D"),
                       s=46, edgecolor="black", linewidth=0.4)
        for m in methods:
            ax.scatter([], [], color=colours[m], label=m)
        for r, mk in markers.items():
            if any(p["ratio"] == r for p in points_by_kind[kind]):
                ax.scatter([], [], color="grey", marker=mk, label=f"{r * 100:g} %")
        c = corr_by_kind[kind]["all"]
        title = f"{kind}: coverage radius vs {METRIC_NAMES[main]}"
        if c["pearson"] is not None:
            title += f"\nPearson {c['pearson']:.2f}, Spearman {c['spearman']:.2f} (n={c['n']})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mean coverage radius of the kept tokens")
        ax.set_ylabel(METRIC_NAMES[main])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.text(0.01, 0.005, caption, fontsize=5.5, color="dimgray", va="bottom")
    fig.tight_layout(rect=(0, 0.025 * (caption.count("\n") + 1), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy(rows_by_kind: dict[str, list[dict]], path: Path, caption: str) -> Path:
    plt = _plt()
    kinds = [k for k in rows_by_kind if rows_by_kind[k]]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5.5 * max(1, len(kinds)), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        main = MAIN_METRIC[kind]
        rows = rows_by_kind[kind]
        for m in dict.fromkeys(r["method"] for r in rows if r["method"] != "dense"):
            pts = sorted((r["ratio"], r[f"{main}_mean"], r[f"{main}_std"] or 0.0) for r in rows if r["method"] == m)
            if not pts or any(p[1] is None for p in pts):
                continue
            ax.errorbar([p[0] * 100 for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                        capsize=3, label=m, linewidth=2.2 if m == "evtp" else 1.2)
        dense = [r for r in rows if r["method"] == "dense"]
        if dense and dense[0][f"{main}_mean"] is not None:
            ax.axhline(dense[0][f"{main}_mean"], color="black", linestyle="--", label="dense")
        ax.set_xlabel("kept visual tokens per frame (%)")
        ax.set_ylabel(METRIC_NAMES[main])
        ax.set_title(f"{kind}: {METRIC_NAMES[main]} by method and ratio", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.text(0.01, 0.005, caption, fontsize=5.5, color="dimgray", va="bottom")
    fig.tight_layout(rect=(0, 0.025 * (caption.count("\n") + 1), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- files ------------------------------------------------------------------------------------------------


def _timed_on(cfg: dict[str, Any]) -> str:
    """What the speed rounds ran on: the torch threads of a CPU bench, the device of a GPU one."""
    if cfg.get("device"):
        return f"device {cfg['device']}"
    return f"{cfg.get('speed_threads') or 'all'} torch thread(s)"


def _meta_lines(meta: dict[str, Any]) -> list[str]:
    cfg, mach = meta["config"], meta["machine"]
    time_line = ""
    if meta.get("cells"):
        time_line = (f"; time: {meta['evaluation_minutes']:.1f} min of evaluation over {meta['cells']} cells, "
                     f"{meta['wall_seconds_this_invocation'] / 60:.1f} min wall in the last invocation")
    return [f"date: {meta['date_utc']}{time_line}; command: {cfg['command']}",
            f"seeds: {','.join(str(s) for s in cfg['seeds'])}; quick: {cfg['quick']}; methods: {','.join(cfg['methods'])}; "
            f"ratios: {','.join(f'{r:g}' for r in cfg['ratios'])}; expressions: image {_limit(cfg['limit_image'])}, "
            f"video {_limit(cfg['limit_video'])}; speed rounds {cfg['speed_rounds']} on {_timed_on(cfg)}",
            f"machine: {mach['platform']}, {mach['processor']}, {mach['cpus']} CPUs, {mach['torch_threads']} torch "
            f"thread(s), torch {mach['torch']}" + (f", GPU {mach['gpu']}" if mach.get("gpu") else "")]


def write_table_csv(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """A table as CSV, preceded by '# ' lines with the date, command, config and machine."""
    from patchprune.data.io import atomic_path

    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            for line in _meta_lines(meta):
                f.write(f"# {line}\n")
            w = csv.DictWriter(f, fieldnames=columns or ["empty"])
            w.writeheader()
            for r in rows:
                w.writerow({c: ("" if r.get(c) is None else (r[c]["mean"] if isinstance(r.get(c), dict) else r[c]))
                            for c in columns})
    return path


def write_report(records: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write README.md, the table CSVs, the PNGs and summary.json under `out`; return the summary
    (with "text": what the command prints)."""
    from patchprune.data.io import atomic_path, write_json

    out = Path(out)
    meta = {**meta, "cells": len(records),
            "records_steps": sorted({(int(r["seed"]), r["step"]) for r in records if r.get("step") is not None}),
            "evaluation_minutes": sum(float(r.get("seconds") or 0.0) for r in records) / 60}
    plain = [r for r in records if not str(r.get("variant") or "").startswith("speed")]
    agg = aggregate(plain)
    kinds = [k for k in ("image", "video") if any(key[0] == k for key in agg)]
    caption = "\n".join(textwrap.fill(line, 200) for line in _meta_lines(meta))
    note = meta["config"].get("latency_note") or ""
    acc = {k: accuracy_rows(agg, k) for k in kinds}
    cost = {k: cost_speed_rows(records, aggregate(plain), k) for k in kinds}
    ladder = ladder_rows(agg, kinds)
    points = {k: coverage_points(agg, k) for k in kinds}
    corr = {k: correlations(points[k], MAIN_METRIC[k]) for k in kinds}
    checks = claims(agg, kinds)
    files = {}
    for k in kinds:
        name = "table1_image.csv" if k == "image" else "table2_video.csv"
        files[name] = write_table_csv(out / name, acc[k], meta)
    files["table3_cost_speed.csv"] = write_table_csv(out / "table3_cost_speed.csv",
                                                     [{"kind": k, **r} for k in kinds for r in cost[k]], meta)
    files["table4_ablation.csv"] = write_table_csv(
        out / "table4_ablation.csv", [{kk: (v["mean"] if isinstance(v, dict) else v) for kk, v in r.items()}
                                      for r in ladder], meta)
    files["fig3_coverage.csv"] = write_table_csv(out / "fig3_coverage.csv",
                                                 [{"kind": k, **p} for k in kinds for p in points[k]], meta)
    files["claims.csv"] = write_table_csv(out / "claims.csv", checks, meta)
    if any(points.values()):
        files["fig3_coverage.png"] = plot_coverage(points, corr, out / "fig3_coverage.png", caption)
    if any(acc.values()):
        files["accuracy_vs_ratio.png"] = plot_accuracy(acc, out / "accuracy_vs_ratio.png", caption)
    summary = {**meta, "claims": checks, "correlations": corr,
               "cost_speed": {k: cost[k] for k in kinds}, "files": sorted(files)}
    write_json(out / "summary.json", summary, indent=2)
    md = _readme(meta, kinds, acc, cost, ladder, agg, corr, checks, note, files, out)
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(md, encoding="utf-8")
    summary["text"] = _terminal_text(checks, cost, note, out)
    return summary


def _readme(meta, kinds, acc, cost, ladder, agg, corr, checks, note, files, out: Path) -> str:
    cfg = meta["config"]
    lat_label = f" ({note})" if note else ""
    parts = ["# `patchprune bench ivs`: EVTP paper Tables 1-4 and Fig. 3 on the laptop-scale InstructSeg",
             "", "Generated by the command below (tables, CSVs and plots are rewritten on every run; hand-written "
             "causes of misses live in [NOTES.md](NOTES.md)).", ""]
    parts += [f"- {line}" for line in _meta_lines(meta)]
    steps: dict[int, set] = {}
    for r in meta.get("records_steps", []):
        steps.setdefault(int(r[0]), set()).add(r[1])
    parts.append("- replicates: " + "; ".join(
        f"seed {r['seed']}: image run `{r['run_image']}`, video run `{r['run_video']}`"
        + (f" (checkpoint step {', '.join(str(int(x)) for x in sorted(steps[r['seed']]))})" if steps.get(r["seed"]) else "")
        for r in meta["replicates"]))
    if meta.get("training"):
        parts.append("- bench-trained runs: " + "; ".join(f"seed {s}: {t['steps']} steps in {t['seconds'] / 60:.1f} min"
                                                         for s, t in meta["training"].items()))
    parts.append(f"- accuracy: mean ± sample std over {len(cfg['seeds'])} seed(s) (no ± with one seed); "
                 "MACs convention (1 MAC = 2 FLOPs), GMACs per sample as `evaluate` counts them")
    parts.append("- tokens per frame K = max(1, round(ratio x N)); selection per frame before the projector / LLM; "
                 "the mask branch is never pruned")
    if meta.get("skipped"):
        parts.append("- skipped cells: " + "; ".join(meta["skipped"][:6]))
    parts += ["", "## Claims", "", "| claim | status | numbers |", "|---|---|---|"]
    parts += [f"| {c['claim']} | **{c['status']}** | {c['detail']} |" for c in checks]
    if "image" in kinds:
        parts += ["", "## Table 1: image set (gIoU / cIoU)", "", accuracy_markdown(acc["image"], "image")]
    if "video" in kinds:
        parts += ["", "## Table 2: video set (J / F / J&F; F as the DAVIS benchmark computes it)", "",
                  accuracy_markdown(acc["video"], "video")]
    parts += ["", f"## Table 3: cost per component, FLOP ratio and measured speed-up (EVTP){lat_label}", "",
              f"Latency: medians of {cfg['speed_rounds']} interleaved rounds (dense and every ratio in each round, "
              f"{cfg['speed_limit_image']} images / {cfg['speed_limit_video']} videos per call, first replicate, "
              f"{_timed_on(cfg)}); "
              "speed-up = median over rounds of dense time / pruned time of the same round."]
    for k in kinds:
        parts += ["", f"### {k}", "", cost_speed_markdown(cost[k])]
    parts += ["", "## Table 4: EVTP ablation ladder (selector option `ablation=`)", "", ladder_markdown(ladder, kinds)]
    parts += ["", "## Fig. 3: coverage radius against accuracy (methods x ratios)", ""]
    if "fig3_coverage.png" in files:
        parts += ["![coverage radius vs accuracy](fig3_coverage.png)", ""]
    parts += ["| set | points | Pearson | Spearman |", "|---|---|---|---|"]
    for k in kinds:
        for group, c in corr[k].items():
            label = "all ratios" if group == "all" else f"at {float(group) * 100:g} %"
            p = "n/a" if c["pearson"] is None else f"{c['pearson']:.3f} (p {c['pearson_p']:.3g})"
            s = "n/a" if c["spearman"] is None else f"{c['spearman']:.3f} (p {c['spearman_p']:.3g})"
            parts.append(f"| {k}, {label} | {c['n']} | {p} | {s} |")
    parts += ["", "A negative correlation means: smaller coverage radius, higher accuracy (the paper's Fig. 3 claim).",
              "", "## Controls (dense)", "",
              "Instruction swapped for another object's expression; and one random visual token per frame "
              "(the token floor: when it costs little, the model hardly uses the image tokens the methods choose "
              "between).", "", controls_markdown(agg, kinds)]
    if "accuracy_vs_ratio.png" in files:
        parts += ["", "## Accuracy against the ratio", "", "![accuracy vs ratio](accuracy_vs_ratio.png)"]
    parts += ["", "## Files", ""] + [f"- `{name}`" for name in sorted({*files, "results.csv", "summary.json"})]
    if (out / "NOTES.md").exists():
        parts += ["", "See [NOTES.md](NOTES.md) for the causes of the misses."]
    return "\n".join(parts) + "\n"


def _terminal_text(checks, cost, note, out: Path) -> str:
    lines = [f"bench ivs: report in {out}/README.md"]
    for k, rows in cost.items():
        for r in rows:
            if r["ratio"] != 1.0 and r["speedup"] is not None and r["flop_ratio"] is not None:
                lines.append(f"  {k} {r['ratio'] * 100:g} %: FLOP ratio {r['flop_ratio']:.2f}, measured speed-up "
                             f"{r['speedup']:.2f}" + (f" ({note})" if note else ""))
    for c in checks:
        lines.append(f"{c['status'].upper():4} {c['claim']}: {c['detail']}")
    return "\n".join(lines)
