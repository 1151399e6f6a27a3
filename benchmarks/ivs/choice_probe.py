"""Where an IVS run's image accuracy goes: the masks the queries offer, or the choice among them.

Per val expression (dense, the last decoder layer): IoU of the chosen query's mask (what gIoU
averages), of the best query's mask (the oracle), whether the choice was the best query, the mean
IoU of a random query, and for configs with a referring map: whether its peak falls inside the
referred object, its mean logit inside minus outside, and the IoU of the query the map alone would
pick (the map pooled under each query's mask). `by_type` repeats the choice figures per expression
type (`expression_type`): attributes only, a spatial relation to an anchor, "same pattern as", and
the other reasoning templates (largest / smallest / closest to an edge / motion).

    python benchmarks/ivs/choice_probe.py --run RUN --data DATA [--checkpoint SNAP] [--limit 240]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from patchprune.data.expressions import RELATIONS

REASONING_WORDS = ("largest", "biggest", "smallest", "closest", "fastest", "leave", "enter", "arriv")
TYPE_FIELDS = ("chosen", "oracle", "chosen_is_best", "by_map_alone")


def expression_type(text: str) -> str:
    """The template family of a generated expression: "same-pattern", "reasoning", "relation" or
    "attribute" (the generator's templates, data/expressions.py; checked in that order)."""
    t = f" {text.lower()} "
    if "same pattern" in t:
        return "same-pattern"
    if any(w in t for w in REASONING_WORDS):
        return "reasoning"
    if any(f" {r} " in t for r in RELATIONS):
        return "relation"
    return "attribute"


def iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """pred [..., H, W] bool, gt [H, W] bool -> IoU per leading index (1 when both are empty)."""
    inter = (pred & gt).flatten(-2).sum(-1).float()
    union = (pred | gt).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def probe(run: Path, data: Path, checkpoint: Path | None, limit: int, batch: int = 8) -> dict[str, float]:
    from patchprune.ivs.data import load_items, make_batch
    from patchprune.ivs.model import IVSOutput
    from patchprune.ivs.run import load_run

    model, tok, config, step = load_run(run, checkpoint)
    items = load_items(data, "image", "val", config.img_size, limit)
    rows: dict[str, list[float]] = {k: [] for k in ("chosen", "oracle", "chosen_is_best", "random_query",
                                                      "map_peak_inside", "map_in_minus_out", "by_map_alone")}
    types: list[str] = []
    S = config.img_size
    with torch.no_grad():
        for i in range(0, len(items), batch):
            its = items[i:i + batch]
            b, masks, _ = make_batch(its, [0] * len(its), tok, config.ref_frames)
            out: IVSOutput = model(b)
            chosen, _ = out.predict((S, S))
            m = out.mask_logits[-1]
            up = torch.nn.functional.interpolate(m, size=(S, S), mode="bilinear", align_corners=False) > 0
            for j in range(len(its)):
                types.append(expression_type(its[j].text))
                per_query = iou(up[j], masks[j])
                c = float(iou(chosen[j], masks[j]))
                rows["chosen"].append(c)
                rows["oracle"].append(float(per_query.max()))
                rows["chosen_is_best"].append(float(c >= float(per_query.max()) - 1e-6))
                rows["random_query"].append(float(per_query.mean()))
                if out.refer_map is not None:
                    rm = torch.nn.functional.interpolate(out.refer_map[j][None, None], size=(S, S), mode="bilinear",
                                                         align_corners=False)[0, 0]
                    inside = masks[j]
                    rows["map_peak_inside"].append(float(inside.flatten()[rm.flatten().argmax()]))
                    if inside.any() and (~inside).any():
                        rows["map_in_minus_out"].append(float(rm[inside].mean() - rm[~inside].mean()))
                    pooled = model.refer_map.pooled(out.refer_map[j:j + 1], m[j:j + 1])[0]
                    rows["by_map_alone"].append(float(per_query[int(pooled.argmax())]))
    res = {k: round(sum(v) / len(v), 4) for k, v in rows.items() if v}
    by_type = {}
    for name in sorted(set(types)):
        at = [i for i, t in enumerate(types) if t == name]
        by_type[name] = {"n": len(at), **{k: round(sum(rows[k][i] for i in at) / len(at), 4)
                                          for k in TYPE_FIELDS if rows[k]}}
    return {"run": str(run), "checkpoint": str(checkpoint or "last"), "step": step, "expressions": len(items), **res,
            "by_type": by_type}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, default=None, help="a snapshot instead of the last checkpoint")
    ap.add_argument("--limit", type=int, default=240, help="val expressions")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(json.dumps(probe(a.run, a.data, a.checkpoint, a.limit)))


if __name__ == "__main__":
    main()
