"""train ivs -> resume -> eval ivs round trip on a tiny generated referring set: exact resume, config +
tokenizer written beside the checkpoint, eval keys for images and videos, the instruction-swap
control, and bad input at the command line (one line, exit 2)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from patchprune.cli import main
from patchprune.data.synth_refer import write_synth_refer
from patchprune.ivs.train import TrainSettings, run_training

DIFFICULTY = dict(min_objects=2, max_objects=2, min_distractors=0, max_distractors=1, min_radius=0.2, max_radius=0.3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ivs") / "data"
    write_synth_refer(root, images=5, videos=3, frames=3, size=64, seed=2, progress=False, **DIFFICULTY)
    return root


def settings(data: Path, out: Path, steps: int = 3) -> TrainSettings:
    return TrainSettings(data=str(data), out=str(out), config="micro", steps=steps, batch=2, lr=1e-3, warmup=1,
                         checkpoint_every=2, threads=1, progress=False, video_share=0.5, seed=1)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


@pytest.fixture(scope="module")
def run_dir(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ivs_run") / "run"
    run_training(settings(data_dir, out))
    return out


def test_run_folder_holds_config_tokenizer_and_a_checkpoint(run_dir: Path) -> None:
    from patchprune.ivs.config import IVSConfig
    from patchprune.ivs.tokenizer import load_tokenizer

    cfg = IVSConfig.load(run_dir)
    tok = load_tokenizer(run_dir)
    assert cfg.vocab_size == tok.get_vocab_size() and cfg.name == "micro"
    meta = json.loads(tensors_meta(run_dir / "checkpoint.safetensors"))
    assert meta["step"] == 3 and len(meta["meta"]["history"]) == 3
    assert {"loss", "mask", "dice", "query", "cpu_minutes"} <= set(meta["meta"]["history"][-1])


def tensors_meta(path: Path) -> str:
    with safe_open(str(path), framework="pt") as fh:
        md = fh.metadata()
    return json.dumps({"step": int(md["step"]), "meta": json.loads(md["meta"])})


def test_resume_is_exact(data_dir: Path, run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import patchprune.ivs.data as ivs_data

    part = tmp_path / "part"
    calls = {"n": 0}
    real = ivs_data.sample_batch

    def crash_in_step_two(*args, **kw):  # dies in step 2, after the step-2 checkpoint
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(ivs_data, "sample_batch", crash_in_step_two)
    with pytest.raises(KeyboardInterrupt):
        run_training(settings(data_dir, part))
    monkeypatch.setattr(ivs_data, "sample_batch", real)
    summary = run_training(settings(data_dir, part))
    assert summary["resumed_from"] == 2
    a, b = tensors(run_dir / "checkpoint.safetensors"), tensors(part / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_changes_the_weights(run_dir: Path) -> None:
    from patchprune.ivs.config import IVSConfig
    from patchprune.ivs.model import IVSModel

    torch.manual_seed(1)
    init = IVSModel(IVSConfig.load(run_dir)).state_dict()
    done = {k.split("/", 2)[2]: v for k, v in tensors(run_dir / "checkpoint.safetensors").items()
            if k.startswith("module/model/")}
    changed = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, done[k])]
    assert len(changed) > 0.8 * len([v for v in init.values() if v.is_floating_point()])


@pytest.mark.parametrize("kind", ["image", "video"])
def test_eval_keys(run_dir: Path, data_dir: Path, kind: str) -> None:
    from patchprune.ivs.evaluate import evaluate

    m = evaluate(run_dir, data_dir, method="evtp", ratio=0.2, kind=kind, limit=3, progress=False, timing=1,
                 threads=1)
    acc = ("giou", "ciou") if kind == "image" else ("j", "f", "jf")
    for key in (*acc, "gmacs", "latency_ms", "coverage_radius", "kept_tokens_per_frame", "method", "ratio", "samples"):
        assert key in m, key
    assert m["kind"] == kind and m["method"] == "evtp" and m["kept_tokens_per_frame"] == 3  # keep_count(16, 0.2)
    assert set(m["gmacs"]) == set(m["latency_ms"]) == {"vision", "selector", "projector", "perceiver", "llm",
                                                        "mask_branch", "total"}
    assert m["gmacs"]["selector"] > 0 and m["coverage_radius"] > 0
    assert m["gmacs"]["total"] == pytest.approx(sum(v for k, v in m["gmacs"].items() if k != "total"))
    for a in acc:
        assert 0.0 <= m[a] <= 1.0
    dense = evaluate(run_dir, data_dir, kind=kind, limit=3, progress=False, timing=0)
    assert dense["coverage_radius"] == 0.0 and dense["kept_tokens_per_frame"] == 16
    assert dense["gmacs"]["llm"] > m["gmacs"]["llm"] and dense["gmacs"]["mask_branch"] == m["gmacs"]["mask_branch"]


def test_swap_instruction_control_runs(run_dir: Path, data_dir: Path) -> None:
    from patchprune.ivs.data import load_items, swap_texts
    from patchprune.ivs.evaluate import evaluate

    items = load_items(data_dir, "image", "val", 64)
    swapped = swap_texts(items)
    for it, s in zip(items, swapped):
        if s is not None:
            other = [o for o in items if o.source == it.source and o.text == s]
            assert other and all(o.track != it.track for o in other)
    m = evaluate(run_dir, data_dir, swap_instruction=True, progress=False, timing=0)
    assert m["swap_instruction"] and m["samples"] + m["skipped"] == len(items)
    assert m["samples"] == sum(s is not None for s in swapped)


def test_cli_train_and_eval_json(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli_run"
    assert main(["train", "ivs", "--data", str(data_dir), "--out", str(out), "--config", "micro", "--steps", "1",
                 "--batch", "2", "--threads", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "ivs", "--run", str(out), "--data", str(data_dir), "--method", "kcenter", "--ratio", "0.5",
                 "--limit", "2", "--timing", "0", "--json", "--no-progress"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["method"] == "kcenter" and m["kept_tokens_per_frame"] == 8 and "giou" in m


@pytest.mark.parametrize("argv, message", [
    (["eval", "ivs", "--run", "{tmp}/missing", "--data", "{data}"], "run folder not found"),
    (["eval", "ivs", "--run", "{run}", "--data", "{tmp}/nodata"], "data folder"),
    (["eval", "ivs", "--run", "{run}", "--data", "{data}", "--method", "bogus"], "unknown selection method"),
    (["eval", "ivs", "--run", "{run}", "--data", "{data}", "--ratio", "0"], "ratio must be in (0, 1]"),
    (["eval", "ivs", "--run", "{run}", "--data", "{data}", "--ratio", "1.5"], "ratio must be in (0, 1]"),
    (["train", "ivs", "--data", "{tmp}/nodata", "--out", "{tmp}/o"], "data folder"),
    (["train", "ivs", "--data", "{data}", "--out", "{run}"], "--resume"),
    (["train", "ivs", "--data", "{tmp}", "--out", "{tmp}/o"], "no referring data found"),
    (["train", "ivs", "--data", "{data}", "--out", "{tmp}/o", "--group", "3"], "--group must divide --batch (8)"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, message, run_dir: Path, data_dir: Path, tmp_path: Path,
                                          capsys) -> None:
    args = [a.format(tmp=tmp_path, data=data_dir, run=run_dir) for a in argv]
    with pytest.raises(SystemExit) if "--ratio" in args else _no_exit() as ctx:
        code = main(args)
    code = ctx.value.code if ctx is not None and hasattr(ctx, "value") else code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


class _no_exit:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_checkpoint_of_another_config_is_refused(run_dir: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil

    from patchprune.ivs.config import IVSConfig

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    cfg = IVSConfig.load(other)
    cfg.seg_queries += 1
    cfg.save(other)
    assert main(["eval", "ivs", "--run", str(other), "--data", str(data_dir), "--timing", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another config" in err and "seg_queries" in err


def test_grouped_batches_hold_several_objects_of_one_scene_at_one_key_frame(data_dir: Path) -> None:
    from patchprune.ivs.data import grouped_indices, load_items, sample_batch, step_generator

    pool = load_items(data_dir, "video", "train", 64)
    idx, keys = grouped_indices(pool, 4, 2, step_generator(0, 5))
    for g in range(2):
        members = [pool[i] for i in idx[2 * g:2 * g + 2]]
        assert len({m.source for m in members}) == 1          # one scene per group
        assert len({m.track for m in members}) == 2           # its two objects, not one twice
        assert keys[2 * g] == keys[2 * g + 1]                 # only the text differs
    again = sample_batch({"video": pool}, 4, step_generator(0, 5), 0.0, group=2)
    assert again == ("video", idx, keys)                      # a pure function of (seed, step)
    with pytest.raises(ValueError, match="--group must divide --batch"):
        grouped_indices(pool, 4, 3, step_generator(0, 5))


def test_grouped_training_runs_and_records_the_group(data_dir: Path, tmp_path: Path) -> None:
    s = settings(data_dir, tmp_path / "g", steps=2)
    s.group = 2
    run_training(s)
    assert json.loads((tmp_path / "g" / "train.json").read_text())["group"] == 2
    s.group = 3
    with pytest.raises(ValueError, match="--group must divide --batch"):
        run_training(s)


def test_choice_probe_bounds_the_chosen_query_by_the_oracle(run_dir: Path, data_dir: Path) -> None:
    probe = _load_bench_script("choice_probe")
    res = probe.probe(run_dir, data_dir, None, limit=4, batch=2)
    assert res["expressions"] == 4 and res["step"] == 3
    assert 0.0 <= res["random_query"] <= res["oracle"] <= 1.0
    assert 0.0 <= res["chosen"] <= res["oracle"] and 0.0 <= res["chosen_is_best"] <= 1.0
    assert sum(t["n"] for t in res["by_type"].values()) == 4
    assert all(0.0 <= t["chosen"] <= t["oracle"] <= 1.0 for t in res["by_type"].values())
    assert [probe.expression_type(x) for x in ("the red dotted star", "the cyan circle left of the striped square",
            "the shape with the same pattern as the red cross left of the blue bar", "the smallest object",
            "the object closest to the top edge", "the square above the ring")] == \
        ["attribute", "relation", "same-pattern", "reasoning", "reasoning", "relation"]
    gt = torch.zeros(4, 4, dtype=torch.bool)
    gt[:2] = True
    assert probe.iou(gt.clone()[None], gt).item() == 1.0 and probe.iou(~gt[None], gt).item() == 0.0


def _load_bench_script(name: str):
    from script_loader import load_script

    return load_script(f"benchmarks/ivs/{name}.py")


def test_seed_curves_averages_the_steps_every_seed_has(tmp_path: Path, monkeypatch, capsys) -> None:
    curves = _load_bench_script("seed_curves")
    runs = []
    for i, gious in enumerate(([0.2, 0.4], [0.4, 0.6, 0.7])):  # the second run has one more snapshot
        run = tmp_path / f"r{i}"
        run.mkdir()
        cache = {str(300 * (k + 1)): {"step": 300 * (k + 1), "giou": g, "giou_swap": g / 2} for k, g in enumerate(gious)}
        (run / "curve.json").write_text(json.dumps(cache))
        runs.append(run)
    stats = curves.seed_stats([curves.read_curve(r) for r in runs], "giou")
    assert list(stats) == [300, 600]  # only the steps present in every seed
    assert stats[300][0] == pytest.approx(0.3) and stats[600][0] == pytest.approx(0.5)
    assert stats[300][1] == pytest.approx(0.1414, abs=1e-4) and stats[300][2] == 2
    out = tmp_path / "curves.png"
    monkeypatch.setattr("sys.argv", ["seed_curves.py", "--group", f"a={runs[0]},{runs[1]}", "--out", str(out)])
    curves.main()
    assert out.stat().st_size > 1000 and "step   600  gIoU 0.500 +- 0.141" in capsys.readouterr().out
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=RUN"):
        curves.parse_group("no-equals-sign")
    with pytest.raises(SystemExit, match="learning_curve.py --run"):
        curves.read_curve(tmp_path)


def test_attribute_probe_regenerates_the_scenes_and_fits_linear_probes(run_dir: Path, data_dir: Path) -> None:
    probe = _load_bench_script("attribute_probe")
    flags = "--min-objects 2 --max-objects 2 --min-distractors 0 --max-distractors 1 --min-radius 0.2 --max-radius 0.3"
    assert probe.parse_flags(flags) == DIFFICULTY
    res = probe.run_probe(run_dir, data_dir, None, None, None, probe.parse_flags(flags), seed=2, batch=2)
    # every expression of both splits is found in the regenerated scenes (same seed and flags)
    assert res["train_unmatched_expressions"] == 0 and res["val_unmatched_expressions"] == 0
    assert res["val_expressions"] > 0
    for feat in ("refer", "target", "tower_pooled", "mask_features_pooled"):
        cells = res["probes"][feat]
        assert cells["val_rows"] > 0
        assert all(0.0 <= cells[a]["val_acc"] <= 1.0 and cells[a]["classes"] >= 1 for a in probe.ATTRIBUTES)
    # other flags regenerate other scenes: refused, not silently mislabelled
    with pytest.raises(ValueError, match="not found in the regenerated scenes"):
        probe.run_probe(run_dir, data_dir, None, None, None, {**DIFFICULTY, "min_radius": 0.05}, seed=2, batch=2)
    # the probe itself: a linearly separable problem is solved
    torch.manual_seed(0)
    x = torch.randn(90, 4)
    y = (x @ torch.randn(4, 3)).argmax(1)  # classes separated by hyperplanes
    lin = probe.fit_probe(x, y, 3)
    assert float((lin(x).argmax(1) == y).float().mean()) > 0.95


def test_target_coverage_counts_kept_tokens_on_the_referred_object(run_dir: Path, data_dir: Path) -> None:
    from patchprune.ivs.evaluate import evaluate

    cov = _load_bench_script("target_coverage")
    # a patch is a target patch when >= half covered; a mask smaller than that marks its most covered patch
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # exactly patch 0 of a 2 x 2 grid
    masks[1, 5, 6] = True  # one pixel of patch 3
    assert cov.target_patches(masks, (2, 2)).tolist() == [[True, False, False, False], [False, False, False, True]]
    out = cov.coverage(run_dir, data_dir, "image", limit=4, methods=("random", "evtp"), ratios=(0.25, 1.0),
                       batch=2, iou=True)
    res, lam = out["cells"], out["evtp_lambda"]
    assert 0 < lam["sigma2"] <= 2 and lam["lambda"] == pytest.approx(1 / (lam["sigma2"] + 1e-6), rel=0.2)
    assert lam["spatial_over_feature_spread"] > 0
    assert set(res) == {"random@0.25", "random@1", "evtp@0.25", "evtp@1"}
    full = res["evtp@1"]  # every token kept: every present target is hit, kept share = area
    assert full["hit"] == 1.0 and full["on_target"] == pytest.approx(full["area"]) and full["enrichment"] == 1.0
    assert full["giou_miss"] is None and full["giou_hit"] == full["giou"]
    dense = evaluate(run_dir, data_dir, kind="image", limit=4, progress=False, timing=0)
    assert full["giou"] == pytest.approx(dense["giou"], abs=1e-4)  # the same model, the same predictions
    for row in res.values():
        assert row["frames"] > 0 and 0.0 <= row["hit"] <= 1.0 and 0.0 <= row["on_target"] <= 1.0
        assert row["area"] == full["area"]
    pruned = evaluate(run_dir, data_dir, method="evtp", ratio=0.25, kind="image", limit=4, progress=False, timing=0)
    assert res["evtp@0.25"]["giou"] == pytest.approx(pruned["giou"], abs=1e-4)
    rung = cov.coverage(run_dir, data_dir, "image", limit=4, methods=("evtp/kcenter",), ratios=(0.25,), batch=2)
    plain = cov.coverage(run_dir, data_dir, "image", limit=4, methods=("kcenter",), ratios=(0.25,), batch=2)
    assert set(rung["cells"]) == {"evtp/kcenter@0.25"} and rung["cells"]["evtp/kcenter@0.25"]["frames"] == 4
    assert cov.method_options("evtp/spatial", 0) == ("evtp", {"ablation": "spatial"})
    assert cov.method_options("random", 3) == ("random", {"seed": 3})
    with pytest.raises(ValueError, match="only evtp has ablation rungs"):
        cov.method_options("kcenter/spatial", 0)
    assert plain["cells"]["kcenter@0.25"]["area"] == rung["cells"]["evtp/kcenter@0.25"]["area"]


def test_target_coverage_plots_the_mean_of_several_results(tmp_path: Path) -> None:
    cov = _load_bench_script("target_coverage")
    runs = [{"kind": "image", "cells": {"evtp@0.1": {"hit": h, "on_target": 0.1, "area": 0.05, "enrichment": 2.0,
                                                     "frames": 9, "giou_miss": None}}} for h in (0.5, 0.7)]
    mean = cov.mean_cells(runs)
    assert mean["evtp@0.1"]["hit"] == pytest.approx(0.6) and mean["evtp@0.1"]["giou_miss"] is None
    cov.plot(runs, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipped_weights_only_run_folder_evaluates_like_the_run(run_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """scripts/ship_run_folders.py on an IVS run: config, settings and tokenizer copied, no optimiser
    state; fp32 gives the run's very figures, fp16 is half the size and still loads everywhere."""
    from patchprune.checkpoints_export import export_run_folder
    from patchprune.ivs.evaluate import evaluate
    from patchprune.ivs.run import load_run

    exact = export_run_folder(run_dir, tmp_path / "fp32", half=False)
    assert {p.name for p in exact.iterdir()} == {"config.json", "train.json", "tokenizer.json",
                                                 "checkpoint.safetensors"}
    assert not [k for k in tensors(exact / "checkpoint.safetensors") if not k.startswith("module/model/")]
    ours = evaluate(exact, data_dir, limit=3, progress=False, timing=0)
    run = evaluate(run_dir, data_dir, limit=3, progress=False, timing=0)
    assert ours["giou"] == run["giou"] and ours["ciou"] == run["ciou"]
    half = export_run_folder(run_dir, tmp_path / "fp16")
    model, _, _, step = load_run(half)
    assert step == 3 and next(model.parameters()).dtype == torch.float32  # loaded back into the fp32 model
    assert (half / "checkpoint.safetensors").stat().st_size < 0.55 * (exact / "checkpoint.safetensors").stat().st_size
    (tmp_path / "broken").mkdir()
    for name in ("config.json", "train.json", "checkpoint.safetensors"):
        (tmp_path / "broken" / name).write_bytes((run_dir / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        export_run_folder(tmp_path / "broken", tmp_path / "out")


def test_gallery_shows_each_method_with_the_iou_evaluate_gives(run_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """benchmarks/ivs/gallery.py: one row per val expression, one panel per method (+ input, dense);
    each panel's IoU is the per-sample IoU behind `evaluate`'s gIoU (same model, same selection)."""
    from patchprune.ivs.evaluate import evaluate

    gal = _load_bench_script("gallery")
    picture, record = gal.gallery(run_dir, data_dir, ["evtp", "random"], 0.25, rows=3)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and len(record) == 3
    side = gal.DISPLAY_SIDE
    assert picture.shape[1] >= 4 * side and picture.shape[0] >= 3 * side  # 4 panels a row, 3 rows
    for method, ratio in (("dense", 1.0), ("evtp", 0.25), ("random", 0.25)):
        giou = evaluate(run_dir, data_dir, method=method, ratio=ratio, kind="image", limit=3, progress=False, timing=0)
        assert np.mean([row[method] for row in record]) == pytest.approx(giou["giou"], abs=1e-4), method
    assert gal.iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    gal.main(["--run", str(run_dir), "--data", str(data_dir), "--methods", "evtp", "--rows", "1",
              "--out", str(tmp_path / "g.png")])
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_sample_scores_average_to_the_reported_metric(run_dir: Path, data_dir: Path, tmp_path: Path,
                                                           capsys) -> None:
    """`evaluate(per_sample=True)` / `eval ivs --per-sample FILE`: one score per expression in data order,
    whose mean is gIoU (images) and J&F (videos: one referred object an expression)."""
    from patchprune.ivs.evaluate import evaluate

    img = evaluate(run_dir, data_dir, method="evtp", ratio=0.5, kind="image", progress=False, timing=0, per_sample=True)
    assert len(img["per_sample"]) == img["samples"] and all(0.0 <= v <= 1.0 for v in img["per_sample"])
    assert np.mean(img["per_sample"]) == pytest.approx(img["giou"], abs=1e-12)
    vid = evaluate(run_dir, data_dir, kind="video", progress=False, timing=0, per_sample=True)
    scored = [v for v in vid["per_sample"] if v is not None]
    assert len(vid["per_sample"]) == vid["samples"] and scored
    assert np.mean(scored) == pytest.approx(vid["jf"], abs=1e-9)
    assert "per_sample" not in evaluate(run_dir, data_dir, kind="image", limit=1, progress=False, timing=0)
    out = tmp_path / "sub" / "scores.json"
    assert main(["eval", "ivs", "--run", str(run_dir), "--data", str(data_dir), "--method", "evtp", "--ratio", "0.5",
                 "--timing", "0", "--json", "--no-progress", "--per-sample", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads(out.read_text())
    assert "per_sample" not in printed and saved["per_sample"] == img["per_sample"]
    assert saved["method"] == "evtp" and saved["ratio"] == 0.5 and saved["kind"] == "image"


def test_paired_differences_count_wins_ties_and_bracket_the_mean(run_dir: Path, data_dir: Path, tmp_path: Path,
                                                                  capsys) -> None:
    pair = _load_bench_script("paired")
    a = [[0.5, 0.7, 0.2, 0.9], [0.1, 0.4]]
    same = pair.paired(a, a)
    assert same == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "wins_a": 0, "wins_b": 0, "ties": 6, "pairs": 6}
    b = [[0.4, 0.7, 0.3, None], [0.0, 0.4]]  # None: not scored, the pair is dropped
    res = pair.paired(a, b)
    assert res["pairs"] == 5 and res["wins_a"] == 2 and res["wins_b"] == 1 and res["ties"] == 2
    assert res["mean"] == pytest.approx((0.1 + 0.0 - 0.1 + 0.1 + 0.0) / 5)
    assert res["lo"] <= res["mean"] <= res["hi"]
    shifted = pair.paired([[x + 0.2 for x in s] for s in a], a)
    assert shifted["lo"] == pytest.approx(0.2) and shifted["hi"] == pytest.approx(0.2) and shifted["wins_a"] == 6
    with pytest.raises(ValueError, match="different expressions"):
        pair.paired([[0.1, 0.2]], [[0.1]])
    # end to end on a trained run: the cache holds eval ivs --per-sample files, the report one row a baseline
    out = tmp_path / "paired"
    pair.main(["--runs", str(run_dir), "--data", str(data_dir), "--methods", "random,kcenter", "--ratios", "0.5",
               "--out", str(out), "--json", str(tmp_path / "p.json")])
    assert "| 0.5 | random |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    cached = json.loads((out / "image_evtp_0.5_s0.json").read_text())["per_sample"]
    assert [r["baseline"] for r in rows] == ["random", "kcenter"] and all(r["pairs"] == len(cached) > 0 for r in rows)
    assert sorted(p.name for p in out.iterdir()) == ["image_evtp_0.5_s0.json", "image_kcenter_0.5_s0.json",
                                                      "image_random_0.5_s0.json"]
