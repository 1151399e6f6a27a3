"""VPP module positions (the paper's Table 4): layout parsing and its errors, the rate rule, every
setting building and training on a tiny ViT (SM-only and Map-SM-only variants included), a
stage-2 train -> eval round trip of a non-default layout, and `bench vis --table4` planning and report."""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).parent))
from test_learned_helpers import tiny_vit  # noqa: E402

from patchprune.bench.vis import TABLE4, Cell, parse_use, plan, table4_results, train_command  # noqa: E402
from patchprune.cli import main  # noqa: E402
from patchprune.data.synth_vis import write_synth_vis  # noqa: E402
from patchprune.learned import LOSS_KEY, vpp_loss  # noqa: E402
from patchprune.learned.layout import (DEFAULT_LAYOUT, ModuleLayout, build_layout, layout_rates,  # noqa: E402
                                       nominal_pkr, parse_layout)
from patchprune.train.checkpoint import checkpoint_meta  # noqa: E402
from patchprune.video import VideoStream  # noqa: E402
from patchprune.vis.report import table4_checks, table4_rows, write_report  # noqa: E402
from patchprune.vis.train import TrainSettings, run_training  # noqa: E402

SETTINGS = [t.layout for t in TABLE4]


def test_table4_layouts_parse_and_print_back() -> None:
    got = [parse_layout(t, 12) for t in SETTINGS]
    assert got == [ModuleLayout(None, (0, 3, 6, 9)), ModuleLayout(None, (1, 3, 6, 9)), ModuleLayout(0, (3, 6, 9)),
                   ModuleLayout(1, ()), DEFAULT_LAYOUT]
    assert [str(g) for g in got] == SETTINGS
    assert [g.slug for g in got] == ["sm0-3-6-9", "sm1-3-6-9", "map0_sm3-6-9", "map1", "map1_sm3-6-9"]
    assert parse_layout(" sm:3,6,9 ; map:1 ") == DEFAULT_LAYOUT  # order of the keys and blanks do not matter


@pytest.mark.parametrize("text,needle", [
    ("", "must not be empty"),
    ("map:x", "must be integers"),
    ("sm:3,,6", "must be integers"),
    ("map:1;sm:3,6,12", r"positions \[12\] are outside 0..11"),
    ("sm:-1,3", r"positions \[-1\] are outside"),
    ("map:6;sm:9", "must come before its reference position 6"),
    ("map:8", "must come before its reference position 6"),
    ("sm:3,3,6", r"positions \[3\] appear twice"),
    ("map:3;sm:3,6", r"positions \[3\] appear twice"),
    ("sm:3;sm:6", "sm appears twice"),
    ("map:1,2", "one Map-SM"),
    ("map:3;sm:1,6", r"SM positions \[1\] come before the Map-SM"),
    ("sm:6,3", "ascending"),
    ("smx:3", "bad item"),
    ("map1", "bad item"),
])
def test_bad_layouts_raise_clear_errors(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as err:
        parse_layout(text, 12)
    assert "--vpp-layout" in str(err.value)


def test_rates_give_every_layout_the_default_nominal_pkr() -> None:
    assert layout_rates(DEFAULT_LAYOUT, 0.55) == (0.7, 0.8) and layout_rates(DEFAULT_LAYOUT, 0.40) == (0.6, 0.7)
    for target in (0.55, 0.40):
        goal = nominal_pkr(DEFAULT_LAYOUT, *layout_rates(DEFAULT_LAYOUT, target), 12)
        for text in SETTINGS:
            layout = parse_layout(text)
            assert nominal_pkr(layout, *layout_rates(layout, target), 12) == pytest.approx(goal, abs=2e-4), text
    assert nominal_pkr(DEFAULT_LAYOUT, 0.7, 0.8, 12) == pytest.approx((1 + 2 * 0.7 + 3 * (0.56 + 0.448 + 0.3584)) / 12)
    assert layout_rates(parse_layout("map:1"), 0.55) == (0.4999, 0.8)  # the paper's setting 4 reads PKR 54.2
    assert layout_rates(parse_layout("sm:0,3,6,9"), 0.55)[0] == pytest.approx(6.4992 / (3 * 2.952), abs=1e-4)
    with pytest.raises(ValueError, match="no first keep rate <= 1"):
        layout_rates(parse_layout("sm:10,11"), 0.55)


@pytest.mark.parametrize("text", SETTINGS)
def test_each_setting_builds_and_trains(text: str) -> None:
    torch.manual_seed(0)
    pruner = build_layout(tiny_vit(), 0.55, text).train()
    layout = parse_layout(text)
    assert pruner.method == ("vpp-sm-only" if layout.map_position is None else "vpp")
    assert sorted(pruner.runner.schedule) == sorted(layout.positions)
    assert len(pruner.config.targets) == len(layout.sm_positions)  # one keep target per SM
    stream, total = VideoStream(keep_graph=True), torch.zeros(())
    for _ in range(3):  # a training chain: Map-SMs act from the second frame on
        stream.start_frame()
        out = pruner(torch.randn(2, 3, 48, 48), stream=stream)
        assert torch.isfinite(out.aux[LOSS_KEY]) and torch.isfinite(out.features).all()
        total = total + out.aux[LOSS_KEY] + out.features.square().mean()
    assert out.pkr < 1.0
    first = layout.positions[0]
    assert out.keep_masks[first].float().mean() < 1.0  # the first module prunes the input of its block
    assert all(bool(out.keep_masks[b].all()) for b in range(first))  # blocks before it run dense
    total.backward()
    grads = [p.grad for p in pruner.pruning_parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    pruner.eval()
    with torch.no_grad():
        stream = VideoStream()
        for _ in range(2):
            stream.start_frame()
            out = pruner(torch.randn(1, 3, 48, 48), stream=stream)
    assert out.pkr < 1.0 and torch.isfinite(out.features).all()


def test_sm_only_and_map_only_losses() -> None:
    torch.manual_seed(0)
    sm_only = build_layout(tiny_vit(), 0.55, "sm:1,3,6,9").train()
    assert sm_only.config.targets == pytest.approx([0.7, 0.56, 0.448, 0.3584])
    out = sm_only(torch.randn(2, 3, 48, 48))
    keeps = [out.keep_masks[p].float().mean() for p in (1, 3, 6, 9)]  # cumulative masks, relative to all tokens
    expected = vpp_loss(None, keeps, sm_only.config.targets)
    assert float(out.aux[LOSS_KEY].detach()) == pytest.approx(float(expected.detach()), rel=1e-4)
    p = torch.tensor(0.6)
    assert float(vpp_loss(p, [], [])) == pytest.approx(40 * 0.1 ** 2)  # Map-SM only: its term alone
    with pytest.raises(ValueError, match="at least one SM stage"):
        vpp_loss(None, [], [])
    map_only = build_layout(tiny_vit(), 0.55, "map:1").train()
    assert map_only.config.targets == [] and map_only.config.options["kappa"] == 0.4999
    stream = VideoStream(keep_graph=True)
    stream.start_frame()
    assert float(map_only(torch.randn(2, 3, 48, 48), stream=stream).aux[LOSS_KEY]) == 0.0  # no prior yet
    stream.start_frame()
    out = map_only(torch.randn(2, 3, 48, 48), stream=stream)
    prob = next(r for r in out.aux["sparsity"].values() if r.kind == "mapsm").prob_mean
    assert float(out.aux[LOSS_KEY].detach()) == pytest.approx(40 * float(prob.detach() - 0.5) ** 2, rel=1e-4)
    assert float(out.keep_masks[1].float().mean()) == pytest.approx(18 / 36)  # top-k of 36 patches, k = 0.4999 * 36


# ---- train vis -> eval vis round trip ---------------------------------------------------------------------------

SMALL = dict(img_size=64, dim=32, depth=12, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=2, decoder_heads=2,
             decoder_ffn=64, pixel_ffn=64, num_queries=5, points=64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pos") / "data"
    write_synth_vis(root, videos=4, valid_videos=2, frames=4, size=64, seed=3, progress=False,
                    min_radius=0.2, max_radius=0.3, max_objects=2)
    return root


@pytest.fixture(scope="module")
def dense_run(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pos_runs") / "dense"
    run_training(TrainSettings(data=str(data_dir), out=str(out), steps=2, batch=2, lr=1e-3, warmup=1,
                               progress=False, threads=1, overrides=SMALL))
    return out


def test_stage2_layout_round_trip(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vpp_map0"
    assert main(["train", "vis", "--data", str(data_dir), "--out", str(out), "--method", "vpp", "--init",
                 str(dense_run), "--vpp-layout", "map:0;sm:3,6,9", "--steps", "2", "--batch", "2", "--warmup", "1",
                 "--threads", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert json.loads((out / "train.json").read_text())["vpp_layout"] == "map:0;sm:3,6,9"
    assert checkpoint_meta(out / "checkpoint.safetensors")["settings"]["vpp_layout"] == "map:0;sm:3,6,9"
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as fh:
        policies = {k.split("/")[2].split(".")[0] for k in fh.keys() if k.startswith("module/policies/")}
    assert policies == {"0", "3", "6", "9"}  # the Map-SM sits before the first block
    from patchprune.vis.run import load_run

    loaded = load_run(out)
    assert sorted(loaded.encoder.runner.schedule) == [0, 3, 6, 9]
    assert loaded.settings["vpp_layout"] == "map:0;sm:3,6,9"
    assert main(["eval", "vis", "--run", str(out), "--data", str(data_dir), "--json", "--timing-frames", "0",
                 "--threads", "1"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    kept = m["keep_ratio_per_block"]
    assert kept[0] < 1.0 and 0 < m["pkr"] < 1.0  # block 0 is pruned: the trained layout was rebuilt


def test_layout_cli_errors_are_one_line(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    base = ["train", "vis", "--data", str(data_dir), "--out", str(tmp_path / "x"), "--init", str(dense_run),
            "--steps", "1", "--no-progress"]
    for extra, needle in ((["--method", "vpp", "--vpp-layout", "map:7;sm:9"], "reference position"),
                          (["--method", "svit", "--vpp-layout", "map:1"], "needs --method vpp"),
                          (["--method", "vpp", "--vpp-layout", "sm:3,14"], "outside 0..11")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


def test_method_options_train_save_and_reload(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vpp_live"
    assert main(["train", "vis", "--data", str(data_dir), "--out", str(out), "--method", "vpp", "--init",
                 str(dense_run), "--method-option", "first_frame_loss=live", "--method-option", "kappa=0.65",
                 "--steps", "1", "--batch", "2", "--warmup", "1", "--threads", "1", "--no-progress",
                 "--no-chain-graph"]) == 0
    capsys.readouterr()
    assert json.loads((out / "train.json").read_text())["chain_graph"] is False
    assert json.loads((out / "train.json").read_text())["method_options"] == {"first_frame_loss": "live",
                                                                                "kappa": 0.65}
    from patchprune.vis.run import load_run

    config = load_run(out).encoder.config
    assert config.loss_weights["first_frame"] == "live" and config.options["kappa"] == 0.65  # the trained options
    assert load_run(out, method="svit").settings["method"] == "svit"  # another method: options not applied
    quiet = load_run(out, method_options={"noise": False})  # eval-time override, key by key
    assert quiet.encoder.config.options["noise"] is False and quiet.encoder.config.options["kappa"] == 0.65
    assert quiet.settings["method_options"] == {"first_frame_loss": "live", "kappa": 0.65, "noise": False}
    assert all(not getattr(m, "noise", False) for m in quiet.encoder.runner.policies.values())
    assert all(m.noise for m in load_run(out).encoder.runner.policies.values())
    # without noise the kept patches do not depend on torch's generator; with it they do
    # (called directly: `eval vis` seeds the generator per video, which would hide the difference)
    def kept(loaded, seed: int) -> list[torch.Tensor]:
        size = loaded.model.config.img_size
        g = torch.Generator().manual_seed(5)
        clips = [torch.randn(2, 3, size, size, generator=g) for _ in range(3)]
        torch.manual_seed(seed)
        stream = VideoStream()
        with torch.no_grad():
            for x in clips:
                stream.start_frame()
                masks = loaded.encoder(x, stream=stream).keep_masks
        return [masks[b] for b in sorted(masks)]
    noisy = load_run(out)
    assert all(torch.equal(a, b) for a, b in zip(kept(quiet, 0), kept(quiet, 1)))
    assert not all(torch.equal(a, b) for a, b in zip(kept(noisy, 0), kept(noisy, 1)))
    assert main(["eval", "vis", "--run", str(out), "--data", str(data_dir), "--json", "--timing-frames", "0",
                 "--threads", "1", "--results", os.devnull, "--method-option", "noise=false"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["method_options"]["noise"] is False


def test_method_option_errors_are_one_line(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    from patchprune.vis.run import parse_method_options

    assert parse_method_options(["a=1", "b=true", "c=live", "d=[3, 6]"]) == {"a": 1, "b": True, "c": "live",
                                                                           "d": [3, 6]}
    base = ["train", "vis", "--data", str(data_dir), "--out", str(tmp_path / "x"), "--init", str(dense_run),
            "--steps", "1", "--no-progress"]
    for extra, needle in ((["--method", "vpp", "--method-option", "first_frame_loss"], "KEY=VALUE"),
                          (["--method", "svit", "--method-option", "wobble=1"], "unknown svit options: ['wobble']"),
                          (["--method", "vpp", "--method-option", "wobble=1"], "unknown VPP options"),
                          (["--method-option", "kappa=0.6"], "needs a learned --method")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


# ---- bench vis --table4 ------------------------------------------------------------------------------------------

def test_table4_plan_cells_and_commands(dense_run: Path, tmp_path: Path) -> None:
    cells = plan([0], ["svit"], [0.4], table4=True)
    assert [c.name for c in cells] == ["dense_s0", "svit040_s0", "vpp055_s0", "vpp055_sm0-3-6-9_s0",
                                       "vpp055_sm1-3-6-9_s0", "vpp055_map0_sm3-6-9_s0", "vpp055_map1_s0"]
    assert plan([0], ["vpp"], [0.55], table4=True).count(Cell("vpp", 0.55, 0)) == 1  # the default row: one cell
    assert Cell("vpp", 0.55, 1, "map:1").key == "vpp@map1:0.55:1"
    fake = tmp_path / "map1_run"  # a run folder as train vis writes it (only what parse_use reads)
    fake.mkdir()
    (fake / "checkpoint.safetensors").write_bytes(b"")
    (fake / "train.json").write_text(json.dumps({"method": "vpp", "vpp_layout": "map:1"}))
    assert parse_use([f"vpp@map1:0.550:0={fake}"], cells) == {"vpp@map1:0.55:0": fake}
    with pytest.raises(ValueError, match="was trained with --vpp-layout 'map:1', the cell needs 'map:1;sm:3,6,9'"):
        parse_use([f"vpp:0.55:0={fake}"], cells)
    with pytest.raises(ValueError, match="not in this benchmark"):
        parse_use([f"vpp@map2:0.55:0={fake}"], cells)

    class Args:
        data, threads, stage2_steps, stage2_batch, stage2_lr, stage2_warmup = "d", 1, 3, 2, 1e-4, 1
        stage2_policy_lr_mult, stage2_head_lr_mult, stage2_method_option = 1.0, 1.0, []
    cmd = train_command(Cell("vpp", 0.55, 0, "map:0;sm:3,6,9"), Path("r"), dense_run, Args())
    assert cmd[-2:] == ["--vpp-layout", "map:0;sm:3,6,9"] and cmd[cmd.index("--target") + 1] == "0.55"
    assert "--policy-lr-mult" not in cmd  # the spec's x1 is train vis's default
    Args.stage2_policy_lr_mult = 10.0
    cmd = train_command(Cell("svit", 0.4, 1), Path("r"), dense_run, Args())
    assert cmd[cmd.index("--policy-lr-mult") + 1] == "10"


def fake_row(cell: Cell, ap: float, pkr: float) -> dict:
    row = {"cell": cell.name, "method": cell.method, "target": cell.target, "seed": cell.seed, "run": "r",
           "train": {"steps": 3}, "metrics": {"AP": ap, "AP50": ap + 0.1, "pkr": pkr}}
    if cell.layout is not None:
        row["layout"] = cell.layout
    return row


def test_table4_report_from_fake_cells(tmp_path: Path) -> None:
    aps = {"sm:0,3,6,9": (0.20, 0.22), "sm:1,3,6,9": (0.21, 0.23), "map:0;sm:3,6,9": (0.25, 0.27), "map:1": (0.24, 0.24)}
    rows = [fake_row(Cell("vpp", 0.55, s, layout), ap[s], 0.55) for layout, ap in aps.items() for s in (0, 1)]
    rows += [fake_row(Cell("vpp", 0.55, s), (0.30, 0.32)[s], 0.53) for s in (0, 1)]
    rows += [fake_row(Cell("vpp", 0.40, 0), 0.5, 0.40)]  # another target: not a Table 4 row
    settings = table4_results(rows)
    assert [len(t["rows"]) for t in settings] == [2, 2, 2, 2, 2]
    table = table4_rows(settings)
    assert table[0] == ["setting", "Map-SM", "SM", "PKR", "AP", "AP50", "note", "paper PKR", "paper AP"]
    assert table[1] == ["1", "-", "0,3,6,9", "0.550 ± 0.000", "21.0 ± 1.4", "31.0 ± 1.4", "no video context",
                        "0.559", "40.1"]
    assert table[4][:3] == ["4", "1", "-"] and table[4][4] == "24.0 ± 0.0"
    assert table[5][:5] == ["5", "1", "3,6,9", "0.530 ± 0.000", "31.0 ± 1.4"] and table[5][-1] == "42.3"
    assert table4_checks(settings)[0][1] == "pass"
    settings[2]["rows"] = [fake_row(Cell("vpp", 0.55, 0, "map:0;sm:3,6,9"), 0.40, 0.5)]
    assert table4_checks(settings)[0][1] == "miss"
    assert table4_checks([{**t, "rows": []} for t in settings])[0][1] == "not run"
    readme = write_report(tmp_path, [], {"table4": settings},  # Table 4 alone (fake rows lack Table 2's metrics)
                          {"data": "d", "threads": 1, "commands": [], "argv": []})
    text = readme.read_text()
    assert "## Table 4: module positions (VPP @ 55 %)" in text and "| 4 | 1 | - |" in text
    assert "default layout (5: Map-SM 1, SM 3,6,9) has the best AP of the settings: **miss**" in text
    with (tmp_path / "table4_positions.csv").open() as fh:
        assert list(csv.reader(fh))[5][0] == "5"
    assert "Table 4" not in write_report(tmp_path / "plain", [], {}, {"data": "d", "threads": 1}).read_text()


def test_bench_table4_trains_reports_and_resumes(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    args = ["bench", "vis", "--data", str(data_dir), "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
            "--quick", "--methods", "vpp", "--targets", "0.55", "--table4", "--use", f"dense:0={dense_run}",
            "--stage2-steps", "1", "--stage2-batch", "2", "--timing-frames", "0", "--fgs-frames", "0"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cells"] == 6  # dense, VPP, 4 layouts
    runs = tmp_path / "runs"
    for t in TABLE4[:4]:
        name = f"vpp055_{parse_layout(t.layout).slug}_s0"
        assert json.loads((runs / name / "train.json").read_text())["vpp_layout"] == t.layout, name
    with (tmp_path / "out" / "table4_positions.csv").open() as fh:
        table = list(csv.reader(fh))
    assert [r[:3] for r in table[1:]] == [["1", "-", "0,3,6,9"], ["2", "-", "1,3,6,9"], ["3", "0", "3,6,9"],
                                          ["4", "1", "-"], ["5", "1", "3,6,9"]]
    assert all(0 < float(r[3]) < 1 for r in table[1:])  # every setting prunes
    with (tmp_path / "out" / "table2.csv").open() as fh:
        assert [r[0] for r in csv.reader(fh)][1:] == ["dense", "VPP @ 55 %"]  # layouts only in Table 4
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## Table 4: module positions" in readme and "--vpp-layout 'map:0;sm:3,6,9'" in readme
    ckpts = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.safetensors")}
    assert len(ckpts) == 5
    assert main(args) == 0  # a rerun trains nothing
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.safetensors")} == ckpts


def test_random_init_eval_takes_method_options(data_dir: Path, dense_run: Path, capsys) -> None:
    """Speed checks evaluate untrained modules; init_keep makes them keep their target rates."""
    base = ["eval", "vis", "--random-init", "tiny", "--method", "vpp", "--target", "0.4", "--data", str(data_dir),
            "--max-videos", "1", "--timing-frames", "0", "--threads", "1", "--json", "--results", os.devnull]
    pkr = {}
    for extra in ([], ["--method-option", "init_keep=true"]):
        assert main(base + extra) == 0
        m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert m["method_options"] == ({"init_keep": True} if extra else {})
        pkr[bool(extra)] = m["pkr"]
    # the first frame has no Map-SM prior (keeps every patch at block 1); the later frames are what
    # streaming FPS times, and there the untrained-but-init_keep modules sit at the nominal schedule
    assert m["pkr_after_first_frame"] < m["pkr"] and abs(m["pkr_after_first_frame"] - 0.40) < 0.03, m
    assert abs(pkr[True] - 0.40) < abs(pkr[False] - 0.40) and abs(pkr[True] - 0.40) < 0.1, pkr
    assert main(["eval", "vis", "--run", str(dense_run), "--data", str(data_dir), "--method-option",
                 "init_keep=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a learned method, got 'dense'" in err and len(err.splitlines()) == 1, err
