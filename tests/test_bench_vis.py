"""`patchprune bench vis` orchestration on a tiny generated set: cells trained and evaluated, finished
cells skipped on a rerun, existing runs reused with --use, the report's tables / figures / checks,
bad options as one-line errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from patchprune.bench.vis import Cell, parse_use, plan
from patchprune.cli import main
from patchprune.data.synth_vis import write_synth_vis
from patchprune.vis.report import checks
from patchprune.vis.train import TrainSettings, run_training

SMALL = dict(img_size=64, dim=32, depth=12, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=2, decoder_heads=2,
             decoder_ffn=64, pixel_ffn=64, num_queries=5, points=64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bvis") / "data"
    write_synth_vis(root, videos=5, valid_videos=2, frames=4, size=64, seed=5, progress=False,
                    min_radius=0.2, max_radius=0.3, max_objects=2)
    return root


@pytest.fixture(scope="module")
def dense_run(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bvis_runs") / "my_dense"
    run_training(TrainSettings(data=str(data_dir), out=str(out), steps=2, batch=2, lr=1e-3, warmup=1,
                               progress=False, threads=1, overrides=SMALL))
    return out


def bench_args(data_dir: Path, tmp: Path, *extra: str) -> list[str]:
    return ["bench", "vis", "--data", str(data_dir), "--out", str(tmp / "out"), "--runs", str(tmp / "runs"),
            "--quick", "--stage2-steps", "2", "--stage2-batch", "2", "--timing-frames", "0", "--fgs-frames", "6",
            *extra]


def test_plan_and_use_parsing(dense_run: Path) -> None:
    cells = plan([0, 1], ["vpp", "tps"], [0.55, 0.4])
    assert [c.name for c in cells[:2]] == ["dense_s0", "dense_s1"]  # stage 2 needs the dense runs first
    assert len(cells) == 2 + 2 * 2 * 2 and Cell("vpp", 0.4, 1) in cells
    assert Cell("vpp", 0.4, 0).name == "vpp040_s0" and Cell("tps", 0.55, 1).key == "tps:0.55:1"
    assert parse_use([f"dense:1={dense_run}", f"vpp:0.40:0={dense_run}"], cells) == {
        "dense:1": dense_run, "vpp:0.4:0": dense_run}
    with pytest.raises(ValueError, match="not in this benchmark"):
        parse_use([f"svit:0.55:0={dense_run}"], cells)
    with pytest.raises(ValueError, match="no checkpoint"):
        parse_use([f"dense:0={dense_run / 'nothing'}"], cells)
    with pytest.raises(ValueError, match="CELL=RUN"):
        parse_use(["dense:0"], cells)


def test_bench_trains_evaluates_reports_and_resumes(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    args = bench_args(data_dir, tmp_path, "--methods", "vpp,svit", "--targets", "0.4", "--use", f"dense:0={dense_run}",
                      "--policies", "evtp")
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["cells"] == 4
    runs = tmp_path / "runs"
    assert not (runs / "dense_s0").exists()  # the given dense run was used, not retrained
    for name in ("vpp040_s0", "svit040_s0"):
        settings = json.loads((runs / name / "train.json").read_text())
        assert settings["init"] == str(dense_run) and settings["steps"] == 2 and settings["stage"] == 2
        assert (runs / name / "bench_eval.json").is_file() and (runs / name / "results_valid.json").is_file()
    out = tmp_path / "out"
    with (out / "table2.csv").open() as fh:
        table = list(csv.reader(fh))
    assert table[0][:3] == ["method", "seeds", "AP"]
    assert [r[0] for r in table[1:]] == ["dense", "VPP @ 40 %", "SViT @ 40 %", "evtp (training-free) @ 40 %"]
    assert abs(float(table[4][-1]) - 0.413) < 0.03  # VPP's 40 % schedule (see test_vis_train)
    assert (dense_run / "bench_eval_evtp_0.4.json").is_file()
    pkr_vpp = float(table[2][-1])
    assert 0 < pkr_vpp < 1  # the pruned cell keeps fewer patches than the dense one
    assert float(table[1][-1]) == 1.0
    for f in ("table3_ioi.csv", "table5_cost.csv", "fig2_fgs.png", "fig5_keep_per_layer.png", "fig6_recovery.png",
              "fig6_recovery.csv", "cells.json"):
        assert (out / f).is_file(), f
    fgs = list(csv.reader((out / "fig2_fgs.csv").open()))
    assert len(fgs) == 1 + SMALL["depth"] + 1  # header + the input of every block + the output
    rec = list(csv.reader((out / "fig6_recovery.csv").open()))[1:]
    tags = [r[2] for r in rec]
    assert tags.count("blank") == 2 and tags.count("B (cut)") == 1
    assert all(r[4] == "" for r in rec if r[2] == "blank")  # no instances on blank frames: no IoI
    readme = (out / "README.md").read_text()
    assert "VPP @ 55 % within 1 AP of dense" in readme and "not run" in readme  # no 55 % cell in this run
    assert f"# dense:0: existing run {dense_run}" in readme
    assert "patchprune train vis" in readme and "--method svit --target 0.4" in readme
    assert "--method evtp --target 0.4" in readme

    # a rerun trains nothing and reuses the cached evaluations
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/*.json")}
    ckpts = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.safetensors")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.safetensors")} == ckpts
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_no_train_reports_only_finished_cells(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    args = bench_args(data_dir, tmp_path, "--methods", "vpp,tps", "--targets", "0.4", "--use", f"dense:0={dense_run}",
                      "--no-train", "--fgs-frames", "0")
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cells"] == 1  # the dense run only
    assert not (tmp_path / "runs").exists()
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "# not run (--no-train): patchprune train vis" in readme and "--method tps --target 0.4" in readme


def test_bench_trains_a_dense_cell(data_dir: Path, tmp_path: Path, capsys) -> None:
    args = bench_args(data_dir, tmp_path, "--methods", "vpp", "--targets", "0.4", "--dense-steps", "1",
                      "--dense-batch", "2", "--fgs-frames", "0")
    assert main(args) == 0
    settings = json.loads((tmp_path / "runs" / "dense_s0" / "train.json").read_text())
    assert settings["method"] == "dense" and settings["steps"] == 1 and settings["seed"] == 0
    vpp = json.loads((tmp_path / "runs" / "vpp040_s0" / "train.json").read_text())
    assert vpp["init"] == str(tmp_path / "runs" / "dense_s0")


def test_checks_pass_and_miss() -> None:
    def row(method, target, ap, pkr):
        return {"method": method, "target": target, "metrics": {"AP": ap, "pkr": pkr}}

    rows = [row("dense", None, 0.300, 1.0), row("vpp", 0.55, 0.295, 0.55), row("vpp", 0.40, 0.25, 0.40),
            row("svit", 0.40, 0.26, 0.40), row("tps", 0.40, 0.20, 0.40)]
    fgs = {0: {"fgs": [0.6, 0.7, 0.8, 0.85, 0.9, 0.9]}}
    got = {c: r for c, r, _ in checks(rows, fgs)}
    assert list(got.values()) == ["pass", "miss", "pass"]  # SViT beats VPP at 40 % here
    assert "VPP behind: SViT;" in checks(rows, fgs)[1][2]  # named per baseline: TPS is behind VPP
    rows[1] = row("vpp", 0.55, 0.28, 0.55)  # 2 AP below dense
    assert checks(rows, {0: {"fgs": [0.9, 0.8, 0.7]}})[0][1] == "miss"
    assert checks(rows, {0: {"fgs": [0.9, 0.8, 0.7]}})[2][1] == "miss"
    # VPP ahead of the baselines that ran, but DynamicViT @ 40 % did not run: partial, not pass
    ahead = [row("dense", None, 0.300, 1.0), row("vpp", 0.40, 0.29, 0.40), row("svit", 0.40, 0.26, 0.40),
             row("tps", 0.40, 0.20, 0.40)]
    verdict, measured = checks(ahead, {})[1][1:]
    assert verdict == "partial" and "not run: DynamicViT" in measured and "VPP behind: none" in measured
    ahead.append(row("dynamicvit", 0.40, 0.27, 0.40))
    assert checks(ahead, {})[1][1] == "pass"


def test_bad_options_are_one_line_errors(data_dir: Path, tmp_path: Path, capsys) -> None:
    for extra, needle in ((["--methods", "nope"], "--methods"), (["--policies", "vpp"], "--policies"), (["--targets", "1.5"], "--targets"),
                          (["--seeds", "x"], "--seeds"), (["--use", "dense:0"], "CELL=RUN")):
        try:
            code = main(bench_args(data_dir, tmp_path, *extra))
        except SystemExit as stop:  # argparse's own errors (one line through the project's parser)
            code = stop.code
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert main(["bench", "vis", "--data", str(tmp_path / "missing"), "--quick"]) == 2
    assert "missing" in capsys.readouterr().err


def test_method_options_and_eval_data(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    bigger = tmp_path / "valid3"  # a larger valid split of the same kind (3 videos against 2)
    write_synth_vis(bigger, videos=3, valid_videos=3, frames=4, size=64, seed=5, progress=False,
                    min_radius=0.2, max_radius=0.3, max_objects=2)
    args = bench_args(data_dir, tmp_path, "--methods", "vpp,svit", "--targets", "0.4", "--use", f"dense:0={dense_run}",
                      "--fgs-frames", "0", "--stage2-method-option", "vpp:smooth_kernel=3",
                      "--stage2-method-option", "vpp:first_frame_loss=live", "--eval-data", str(bigger))
    assert main(args) == 0
    capsys.readouterr()
    runs = tmp_path / "runs"
    assert json.loads((runs / "vpp040_s0" / "train.json").read_text())["method_options"] == {
        "smooth_kernel": 3, "first_frame_loss": "live"}
    assert json.loads((runs / "svit040_s0" / "train.json").read_text()).get("method_options") is None  # vpp's only
    evaluated = json.loads((runs / "vpp040_s0" / "bench_eval.json").read_text())
    assert evaluated["eval_data"] == str(bigger) and evaluated["videos"] == 3
    readme = (tmp_path / "out" / "README.md").read_text()
    assert f"evaluated on the valid split of `{bigger}`" in readme and "`smooth_kernel=3`" in readme
    assert "--method-option smooth_kernel=3 --method-option first_frame_loss=live" in readme

    # the same cells on the training folder's own valid split: evaluated again, not read from the cache
    args_own = [a for a in args if a not in ("--eval-data", str(bigger))]
    assert main(args_own) == 0
    capsys.readouterr()
    assert json.loads((runs / "vpp040_s0" / "bench_eval.json").read_text())["videos"] == 2

    # a run trained with other options cannot stand in for a cell
    args_other = bench_args(data_dir, tmp_path, "--methods", "vpp", "--targets", "0.4", "--use", f"dense:0={dense_run}",
                            "--use", f"vpp:0.4:0={runs / 'vpp040_s0'}", "--fgs-frames", "0")
    assert main(args_other) == 2
    err = capsys.readouterr().err.strip()
    assert "trained with method options" in err and len(err.splitlines()) == 1
    for bad in ("smooth_kernel=3", ":x=1"):
        assert main(bench_args(data_dir, tmp_path, "--stage2-method-option", bad)) == 2
        err = capsys.readouterr().err.strip()
        assert "METHOD:KEY=VALUE" in err and len(err.splitlines()) == 1, err
