"""What an IVS run's choice features know: linear probes of colour, texture and shape.

The target choice scores each <seg> query by dot(MLP(query state), target vector) (+ the referring
map pooled under its mask). If the query states do not encode an attribute, no target vector can
pick by it; if the target vector does not, the words are not bound. This script regenerates the
generated image set's scenes (same seed and flags as `data synth-refer`, so the generator's own
colour / texture / shape of every object is known), runs the model dense, and fits a multinomial
logistic regression on train-split features, scored on the val split:

- `query`:  the last decoder layer's state of each query whose mask covers an object (IoU > 0.5)
            -> that object's colour / texture / shape;
- `refer`:  the mean language-model state over the <refer> span (before the target head)
            -> the referred object's attributes;
- `target`: the target head's vector (after its cross-attention to the mask features)
            -> the referred object's attributes;
- `tower_pooled` / `mask_features_pooled`: the vision tower's last features / the mask branch's
            per-pixel mask features, averaged under each object's true mask -> its attributes
            (where the information is before the queries read it).

For `refer` / `target` the figures are split into expressions that name the attribute and those that
do not (a reasoning or relation expression may name none).

    python benchmarks/ivs/attribute_probe.py --run RUN --data runs/ivs_data [--checkpoint SNAP]
        [--train-limit 600] [--synth-flags "--min-objects 2 ..."]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

ATTRIBUTES = ("colour", "texture", "shape")
ALL_NAMED = (True, True, True)  # rows of object features: "named" applies to expressions only
DEFAULT_FLAGS = ("--min-objects 2 --max-objects 3 --min-distractors 1 --max-distractors 2 --clutter 4 "
                 "--min-radius 0.14 --max-radius 0.22")


def parse_flags(flags: str) -> dict:
    """`data synth-refer` difficulty flags -> Difficulty keyword arguments (the commands' own parser)."""
    from patchprune.data.commands import difficulty_from_flags

    return difficulty_from_flags(flags)


def scene_facts(name: str, size: int, seed: int, difficulty: dict) -> dict:
    """Regenerate one image scene of the RefCOCO-like set: {"objects": [(attrs, mask bool [S, S])],
    "texts": {expression: attrs of its object}}."""
    from patchprune.data.expressions import TEXTURE_WORDS, SHAPE_WORDS
    from patchprune.data.synth import split_seed
    from patchprune.data.synth_refer import generate_refer_samples

    split, j = name.rsplit("_", 1)
    s = split_seed(seed, "valid" if split == "val" else "train", int(j), stream="refer-images")
    video, exps, _ = generate_refer_samples(s, 1, size, name=name, **difficulty)
    objects, by_track = [], {}
    for tr in list(video.tracks) + list(video.distractors):
        a = tr.attributes
        if not a or "colour" not in a:
            continue
        attrs = (a["colour"], TEXTURE_WORDS[a["texture"]], SHAPE_WORDS[a["shape"]])
        objects.append((attrs, torch.from_numpy(np.asarray(tr.masks[0], dtype=bool))))
        by_track[tr.track_id] = attrs
    return {"objects": objects, "texts": {e.text: by_track[e.track_id] for e in exps if e.track_id in by_track}}


def collect(model, tok, config, items, facts: dict, batch: int = 8) -> dict[str, list]:
    """Features and attribute labels of every query that covers an object, and of every expression."""
    from patchprune.ivs.data import make_batch

    S = config.img_size
    got: dict[str, torch.Tensor] = {}
    hooks = [model.target_head.refer_proj.register_forward_hook(lambda m, i, o: got.__setitem__("refer", i[0])),
             model.target_head.norm.register_forward_hook(lambda m, i, o: got.__setitem__("target", o.squeeze(1)))]
    rows: dict[str, list] = {"query": [], "refer": [], "target": [], "tower_pooled": [], "mask_features_pooled": []}
    seen: set[str] = set()
    try:
        with torch.no_grad():
            for i in range(0, len(items), batch):
                its = items[i:i + batch]
                b, _, _ = make_batch(its, [0] * len(its), tok, config.ref_frames)
                out = model(b)
                up = torch.nn.functional.interpolate(out.mask_logits[-1], size=(S, S), mode="bilinear",
                                                     align_corners=False) > 0
                for j, it in enumerate(its):
                    f = facts[it.source]
                    attrs = f["texts"].get(it.text)
                    if attrs is not None:
                        named = tuple(w in f" {it.text} " for w in (f" {a} " for a in attrs))
                        rows["refer"].append((got["refer"][j].clone(), attrs, named))
                        rows["target"].append((got["target"][j].clone(), attrs, named))
                    masks = torch.stack([m for _, m in f["objects"]])  # [M, S, S]
                    if it.source not in seen:  # each object once: features pooled under its true mask
                        seen.add(it.source)
                        g = config.grid
                        tower = out.vision[j].reshape(*g, -1).permute(2, 0, 1)
                        mf = model.mask_branch.pixels(b.key[j:j + 1]).mask_features[0]
                        for name, fmap in (("tower_pooled", tower), ("mask_features_pooled", mf)):
                            w = torch.nn.functional.adaptive_avg_pool2d(masks[:, None].float(), fmap.shape[-2:])[:, 0]
                            pooled = (w.flatten(1) @ fmap.flatten(1).T) / w.flatten(1).sum(1, keepdim=True).clamp_min(1e-6)
                            for m in range(len(masks)):
                                if w[m].sum() > 0:
                                    rows[name].append((pooled[m].clone(), f["objects"][m][0], ALL_NAMED))
                    inter = (up[j][:, None] & masks[None]).flatten(2).sum(-1).float()
                    union = (up[j][:, None] | masks[None]).flatten(2).sum(-1).float().clamp_min(1)
                    best, which = (inter / union).max(1)
                    for q in range(up.shape[1]):
                        if best[q] > 0.5:
                            rows["query"].append((out.query_states[j, q].clone(), f["objects"][int(which[q])][0],
                                                  ALL_NAMED))
    finally:
        for h in hooks:
            h.remove()
    return rows


def fit_probe(x_tr: torch.Tensor, y_tr: torch.Tensor, classes: int, steps: int = 300, decay: float = 1e-3,
              seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised features (L-BFGS)."""
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x_tr.shape[1], classes)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x_tr), y_tr) + decay * lin.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def probe_table(train: dict[str, list], val: dict[str, list]) -> dict:
    out = {}
    for feat in ("query", "refer", "target", "tower_pooled", "mask_features_pooled"):
        tr, va = train[feat], val[feat]
        if not tr or not va:
            continue
        x_tr = torch.stack([r[0] for r in tr]).float()
        x_va = torch.stack([r[0] for r in va]).float()
        mu, sd = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
        x_tr, x_va = (x_tr - mu) / sd, (x_va - mu) / sd
        res = {"train_rows": len(tr), "val_rows": len(va)}
        for k, name in enumerate(ATTRIBUTES):
            values = sorted({r[1][k] for r in tr} | {r[1][k] for r in va})
            y_tr = torch.tensor([values.index(r[1][k]) for r in tr])
            y_va = torch.tensor([values.index(r[1][k]) for r in va])
            lin = fit_probe(x_tr, y_tr, len(values))
            with torch.no_grad():
                right = (lin(x_va).argmax(1) == y_va).float()
            majority = float((y_va == torch.bincount(y_tr, minlength=len(values)).argmax()).float().mean())
            cell = {"classes": len(values), "val_acc": round(float(right.mean()), 3), "majority": round(majority, 3)}
            if feat in ("refer", "target"):
                named = torch.tensor([r[2][k] for r in va])
                if named.any():
                    cell["named_acc"] = round(float(right[named].mean()), 3)
                if (~named).any():
                    cell["unnamed_acc"] = round(float(right[~named].mean()), 3)
                cell["named_share"] = round(float(named.float().mean()), 3)
            res[name] = cell
        out[feat] = res
    return out


def run_probe(run: Path, data: Path, checkpoint: Path | None, train_limit: int | None, val_limit: int | None,
              difficulty: dict, seed: int, batch: int = 8) -> dict:
    """The probe table of one run (see the module docstring); `difficulty` / `seed`: what the data was
    written with (ValueError when the regenerated scenes do not hold the data's expressions)."""
    from patchprune.ivs.data import load_items
    from patchprune.ivs.run import load_run

    model, tok, config, step = load_run(run, checkpoint)
    result = {"run": str(run), "checkpoint": str(checkpoint or "last"), "step": step}
    rows = {}
    for split, limit in (("train", train_limit), ("val", val_limit)):
        items = load_items(data, "image", split, config.img_size, limit)
        facts = {src: scene_facts(src, config.img_size, seed, difficulty) for src in {it.source for it in items}}
        missing = sum(it.text not in facts[it.source]["texts"] for it in items)
        if missing > len(items) // 10:
            raise ValueError(f"{missing} of {len(items)} {split} expressions not found in the regenerated scenes: "
                             "--synth-flags / --seed must be the ones the data was written with")
        rows[split] = collect(model, tok, config, items, facts, batch)
        result[f"{split}_expressions"] = len(items)
        result[f"{split}_unmatched_expressions"] = missing
    result["probes"] = probe_table(rows["train"], rows["val"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--train-limit", type=int, default=600, help="train expressions to fit the probes on")
    ap.add_argument("--val-limit", type=int, default=None, help="val expressions to score (default all)")
    ap.add_argument("--synth-flags", default=DEFAULT_FLAGS, help="the difficulty flags the data was written with")
    ap.add_argument("--seed", type=int, default=0, help="the data's --seed")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    try:
        print(json.dumps(run_probe(a.run, a.data, a.checkpoint, a.train_limit, a.val_limit,
                                   parse_flags(a.synth_flags), a.seed)))
    except (ValueError, FileNotFoundError) as e:  # one line for a user, as the CLI does
        raise SystemExit(f"attribute_probe: {e}") from None


if __name__ == "__main__":
    main()
