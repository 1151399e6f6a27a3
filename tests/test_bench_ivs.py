"""`patchprune bench ivs` orchestration, resume, tables, claim checks and option errors.

The model's `evaluate` / `train` are replaced by small fakes with the same signatures (the bench only
calls them), so these tests check the bench itself: which cells run with which arguments, what is
skipped on a rerun, what the tables hold and how the claims are judged. No timing assertions.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from patchprune.bench import ivs as bench
from patchprune.bench.ivs_report import aggregate, claims, correlations, cost_speed_rows
from patchprune.cli import main
from patchprune.tokens import keep_count

N = 144  # 12 x 12 patch grid of the fake model
QUALITY = {"random": 0.50, "kcenter": 0.60, "divprune": 0.62, "tome": 0.58, "visionzip": 0.55, "vispruner": 0.57,
           "evtp": 0.66}
RUNG = {"kcenter": 0.60, "spatial": 0.63, "adaptive": 0.64}


class FakeModel:
    """evaluate() / train() with H1's public signatures; accuracy depends on method, ratio, seed."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[dict] = []
        self.trained: list[dict] = []
        self.fail_after = fail_after

    def evaluate(self, run, data, method="dense", ratio=1.0, split=None, kind=None, limit=None,
                 swap_instruction=False, threads=None, progress=True, seed=0, options=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append(dict(run=str(run), data=str(data), method=method, ratio=ratio, kind=kind, limit=limit,
                               swap=swap_instruction, threads=threads, seed=seed, options=dict(options or {})))
        rung = (options or {}).get("ablation")
        q = 0.8 if method == "dense" else (RUNG[rung] if rung else QUALITY[method]) + 0.3 * ratio
        q += 0.01 * seed
        if swap_instruction:
            q -= 0.5
        k = N if method == "dense" else keep_count(N, ratio)
        res = {"kind": kind, "method": method, "ratio": ratio, "samples": limit or 20,
               "coverage_radius": 0.0 if method == "dense" else 1.0 - q,
               "kept_tokens_per_frame": k,
               "gmacs": {"vision": 1.0, "selector": 0.0 if method == "dense" else 0.01, "llm": 2.0 * k / N,
                         "mask_branch": 0.5},
               "latency_ms": {"vision": 10.0, "llm": 1.0 + 20.0 * k / N, "mask_branch": 5.0}}
        res["gmacs"]["total"] = sum(res["gmacs"].values())
        res["latency_ms"]["total"] = sum(res["latency_ms"].values())
        if kind == "image":
            res.update(giou=q, ciou=q - 0.02)
        else:
            res.update(j=q, f=q + 0.02, jf=q + 0.01)
        return res

    def train(self, data, out, config="tiny", steps=100, seed=0, threads=None, progress=True, mask_init=None):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(b"x")
        self.trained.append(dict(data=str(data), out=str(out), steps=steps, seed=seed, config=config,
                                 mask_init=mask_init))
        return out


@pytest.fixture
def fake(monkeypatch):
    model = FakeModel()
    monkeypatch.setattr(bench, "_evaluate_fn", lambda: model.evaluate)
    monkeypatch.setattr(bench, "_train_fn", lambda: model.train)
    monkeypatch.setattr(bench, "DATA_RECIPE", {"images": 3, "videos": 2, "frames": 3, "size": 64})
    return model


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["bench", "ivs", "--quick", "--no-progress", "--out", str(tmp_path / "out"), "--work",
            str(tmp_path / "work"), "--steps", "7", "--speed-rounds", "2", *extra]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def test_quick_run_trains_evaluates_every_cell_and_writes_the_report(fake, tmp_path, capsys):
    assert main(_argv(tmp_path, "--seeds", "0,1")) == 0
    out = tmp_path / "out"
    # data generated once, one dense model per seed, trained with the given steps
    assert (tmp_path / "work" / "data" / "refcoco" / "refs.json").exists()
    assert [(t["seed"], t["steps"], t["config"]) for t in fake.trained] == [(0, 7, "tiny"), (1, 7, "tiny")]
    # cells: per seed and kind 1 dense + 7 methods x 3 ratios + 3 ladder rungs (20 % in quick) + swap
    # + token floor; speed: 2 rounds x 2 kinds x (dense + 3 ratios) on seed 0
    per = 1 + 7 * 3 + 3 + 1 + 1
    assert len(fake.calls) == 2 * 2 * per + 2 * 2 * 4
    assert len(_rows(out / "results.csv")) == len(fake.calls)
    ladder = [c for c in fake.calls if c["options"]]
    assert sorted({c["options"]["ablation"] for c in ladder}) == ["adaptive", "kcenter", "spatial"]
    assert {c["ratio"] for c in ladder} == {0.2} and {c["method"] for c in ladder} == {"evtp"}
    swap = [c for c in fake.calls if c["swap"]]
    assert [(c["kind"], c["method"], c["seed"]) for c in swap] == [("image", "dense", 0), ("video", "dense", 0),
                                                                   ("image", "dense", 1), ("video", "dense", 1)]
    floor = [c for c in fake.calls if c["ratio"] == bench.FLOOR_RATIO]
    assert len(floor) == 4 and {c["method"] for c in floor} == {"random"} and keep_count(N, bench.FLOOR_RATIO) == 1
    plain = [c for c in fake.calls if not c["swap"] and not c["options"]]
    assert {c["limit"] for c in plain if c["kind"] == "image"} == {120, 8}  # accuracy cells / speed cells
    assert all(c["run"].endswith(f"run_seed{c['seed']}") for c in fake.calls)
    # Table 1: dense + 7 x 3 rows; gIoU mean over the two seeds (fake: +0.01 per seed)
    t1 = _rows(out / "table1_image.csv")
    assert len(t1) == 22 and t1[0]["method"] == "dense"
    evtp10 = next(r for r in t1 if r["method"] == "evtp" and float(r["ratio"]) == 0.1)
    assert float(evtp10["giou_mean"]) == pytest.approx(0.66 + 0.03 + 0.005)
    assert float(evtp10["giou_std"]) == pytest.approx(0.00707, abs=1e-4)
    assert int(float(evtp10["k_per_frame"])) == keep_count(N, 0.1)
    assert len(_rows(out / "table2_video.csv")) == 22
    # Table 3: dense + 3 ratios per kind; FLOP ratio from the GMACs, speed-up from the interleaved rounds
    t3 = [r for r in _rows(out / "table3_cost_speed.csv") if r["kind"] == "image"]
    assert [float(r["ratio"]) for r in t3] == [1.0, 0.05, 0.1, 0.2]
    r20 = t3[3]
    k = keep_count(N, 0.2)
    dense_total, pruned_total = 1 + 2 + 0.5, 1 + 0.01 + 2 * k / N + 0.5
    assert float(r20["flop_ratio"]) == pytest.approx(dense_total / pruned_total)
    assert float(r20["speedup"]) == pytest.approx(36.0 / (16.0 + 20.0 * k / N))
    # Table 4: 4 rungs at 20 %, image gIoU and video J&F
    t4 = _rows(out / "table4_ablation.csv")
    assert [r["rung"] for r in t4] == ["kcenter", "spatial", "adaptive", "full"]
    assert float(t4[0]["image_giou"]) == pytest.approx(0.60 + 0.06 + 0.005)
    # Fig. 3 points: 7 methods x 3 ratios per kind; PNGs are PNGs; README carries the claims
    assert len(_rows(out / "fig3_coverage.csv")) == 42
    for png in ("fig3_coverage.png", "accuracy_vs_ratio.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = (out / "README.md").read_text()
    for section in ("## Claims", "## Table 1", "## Table 2", "## Table 3", "## Table 4", "## Fig. 3",
                    "## Controls (dense)", "1 token / frame", "seeds: 0,1", "machine:",
                    "expressions: image first 120, video first 16; speed rounds 2 on 1 torch thread(s)"):
        assert section in readme
    summary = json.loads((out / "summary.json").read_text())
    status = {c["claim"]: c["status"] for c in summary["claims"]}
    assert status["EVTP at 10 % keeps >= 95 % of dense gIoU"] == "miss"  # 0.695 / 0.805
    assert all(s == "pass" for c, s in status.items() if "every baseline" in c or "swapping" in c)
    # the fake's radius falls as accuracy rises: perfect negative rank correlation
    assert summary["correlations"]["image"]["all"]["spearman"] == pytest.approx(-1.0)
    text = capsys.readouterr().out
    assert "MISS EVTP at 10 %" in text and "measured speed-up" in text


def test_rerun_skips_finished_cells_and_trained_runs(fake, tmp_path):
    assert main(_argv(tmp_path)) == 0
    first = len(fake.calls)
    fake.calls.clear()
    fake.trained.clear()
    assert main(_argv(tmp_path)) == 0
    assert fake.calls == [] and fake.trained == []
    # drop two rows: exactly those two cells run again
    path = tmp_path / "out" / "results.csv"
    rows = _rows(path)
    kept = rows[:5] + rows[7:]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    assert main(_argv(tmp_path)) == 0
    assert [(c["kind"], c["method"], c["ratio"]) for c in fake.calls] == \
           [(r["kind"], r["method"], float(r["ratio"])) for r in rows[5:7]]
    assert len(_rows(path)) == first


def test_a_rerun_with_another_limit_measures_the_accuracy_cells_again(fake, tmp_path):
    """results.csv rows remember run, data, limit (and a speed cell's threads): a record measured on
    120 expressions is not reused for a table asked on 50, while the speed cells stay."""
    assert main(_argv(tmp_path)) == 0
    fake.calls.clear()
    assert main(_argv(tmp_path, "--limit-image", "50")) == 0
    assert fake.calls and {(c["kind"], c["limit"]) for c in fake.calls} == {("image", 50)}
    rows = [r for r in _rows(tmp_path / "out" / "results.csv") if r["kind"] == "image" and "speed" not in r["variant"]]
    assert {r["limit"] for r in rows} == {"50"}
    fake.calls.clear()
    assert main(_argv(tmp_path, "--limit-image", "50", "--speed-threads", "2")) == 0
    assert {c["threads"] for c in fake.calls} == {2} and all(c["limit"] in (8, 1) for c in fake.calls)


def test_speed_rounds_run_on_their_own_thread_count(fake, tmp_path):
    assert main(_argv(tmp_path, "--threads", "2", "--methods", "evtp", "--ratios", "0.1")) == 0
    speed = [c for c in fake.calls if c["limit"] in (8, 1)]
    accuracy = [c for c in fake.calls if c not in speed]
    assert speed and {c["threads"] for c in speed} == {1} and {c["threads"] for c in accuracy} == {2}
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "first replicate, 1 torch thread(s)" in readme and "--speed-threads 1" in readme


def test_an_interrupted_run_keeps_its_finished_cells(fake, tmp_path):
    fake.fail_after = 9
    assert main(_argv(tmp_path)) == 130  # KeyboardInterrupt
    assert len(_rows(tmp_path / "out" / "results.csv")) == 9
    fake.fail_after = None
    fake.calls.clear()
    assert main(_argv(tmp_path)) == 0
    assert len(fake.calls) == 2 * (1 + 21 + 3 + 1 + 1) + 2 * 2 * 4 - 9


def test_mask_init_trains_each_seed_from_its_vis_run_and_retrains_when_it_changes(fake, tmp_path):
    vis = [tmp_path / "vis0", tmp_path / "vis1"]
    for v in vis:
        v.mkdir()
    argv = _argv(tmp_path, "--seeds", "0,1", "--mask-init", f"{vis[0]},{vis[1]}", "--methods", "evtp",
                 "--ratios", "0.1")
    assert main(argv) == 0
    assert [(t["seed"], t["mask_init"]) for t in fake.trained] == [(0, str(vis[0])), (1, str(vis[1]))]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert f"--mask-init {vis[0]},{vis[1]}" in json.dumps(summary)
    fake.trained.clear()
    assert main(argv) == 0 and fake.trained == []  # the same recipe: nothing retrained
    assert main(_argv(tmp_path, "--seeds", "0,1", "--methods", "evtp", "--ratios", "0.1")) == 0
    assert [(t["seed"], t["mask_init"]) for t in fake.trained] == [(0, None), (1, None)]  # another recipe


def test_given_runs_are_evaluated_without_training(fake, tmp_path):
    run, data = tmp_path / "myrun", tmp_path / "mydata"
    run.mkdir()
    data.mkdir()
    argv = _argv(tmp_path, "--run-image", str(run), "--data-image", str(data), "--methods", "evtp,random",
                 "--ratios", "0.1", "--threads", "1")
    assert main(argv) == 0
    assert fake.trained == [] and not (tmp_path / "work" / "data").exists()
    assert {c["kind"] for c in fake.calls} == {"image"}
    assert {(c["run"], c["data"], c["threads"]) for c in fake.calls} == {(str(run), str(data), 1)}
    # dense + 2 methods + ladder (0.1 only: the quick ladder ratio 0.2 is not asked, the last ratio is used)
    # + swap + token floor
    assert len([c for c in fake.calls if not c["limit"] == 8]) == 1 + 2 + 3 + 1 + 1


def test_a_swap_cell_without_a_second_object_is_skipped_with_its_reason(fake, monkeypatch, tmp_path):
    plain = fake.evaluate

    def evaluate(*args, swap_instruction=False, **kwargs):
        if swap_instruction and kwargs.get("kind") == "video":
            raise ValueError("no sample of DATA (video, valid) has another object's expression to swap in")
        return plain(*args, swap_instruction=swap_instruction, **kwargs)

    monkeypatch.setattr(bench, "_evaluate_fn", lambda: evaluate)
    assert main(_argv(tmp_path, "--methods", "evtp", "--ratios", "0.2")) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["skipped"]) == 1 and "video|0|dense|1|swap" in summary["skipped"][0]
    status = {c["claim"]: c["status"] for c in summary["claims"]}
    assert status["video: swapping the instruction for another object's lowers J&F"] == "n/a"
    assert status["image: swapping the instruction for another object's lowers gIoU"] == "pass"


def _rec(kind, method, ratio, value, seed=0, variant="", radius=None):
    metric = {"giou": value, "ciou": value} if kind == "image" else {"j": value, "f": value, "jf": value}
    return {"kind": kind, "seed": seed, "method": method, "ratio": ratio, "variant": variant,
            "coverage_radius": radius, "gmacs": {}, **metric}


def test_claims_pass_and_miss_logic():
    recs = [_rec("image", "dense", 1.0, 0.70), _rec("image", "dense", 1.0, 0.30, variant="swap"),
            _rec("image", "evtp", 0.1, 0.67), _rec("image", "random", 0.1, 0.60),
            _rec("image", "evtp", 0.2, 0.68), _rec("image", "divprune", 0.2, 0.69)]
    status = {c["claim"]: (c["status"], c["detail"]) for c in claims(aggregate(recs), ["image"])}
    assert status["EVTP at 10 % keeps >= 95 % of dense gIoU"][0] == "pass"  # 0.67 / 0.70 = 0.957
    assert status["image: EVTP >= every baseline at 10 % (gIoU)"][0] == "pass"
    miss = status["image: EVTP >= every baseline at 20 % (gIoU)"]
    assert miss[0] == "miss" and "divprune" in miss[1]
    assert status["dense gIoU on the image set >= 0.6"][0] == "pass"
    assert status["image: swapping the instruction for another object's lowers gIoU"][0] == "pass"
    assert not any("1 random visual token" in c for c in status)  # no floor cell, no floor line
    floor = claims(aggregate(recs + [_rec("image", "random", 1e-3, 0.69, variant="floor")]), ["image"])
    spread, diag = [c for c in floor if "diagnostic" in c["claim"]]
    assert diag["status"] == "info" and "(drop 0.010;" in diag["detail"]
    assert spread["status"] == "info" and spread["detail"].startswith("10 %: 0.0700, 20 %: 0.0100")
    recs[2]["giou"] = 0.66  # 0.66 / 0.70 = 0.943
    recs[1]["giou"] = 0.71
    status = {c["claim"]: c["status"] for c in claims(aggregate(recs), ["image"])}
    assert status["EVTP at 10 % keeps >= 95 % of dense gIoU"] == "miss"
    assert status["image: swapping the instruction for another object's lowers gIoU"] == "miss"
    # a tie counts as "at or above"; missing cells are n/a, not pass
    recs[5]["giou"] = 0.68
    status = {c["claim"]: c["status"] for c in claims(aggregate(recs), ["image", "video"])}
    assert status["image: EVTP >= every baseline at 20 % (gIoU)"] == "pass"
    assert status["video: swapping the instruction for another object's lowers J&F"] == "n/a"


def test_claims_use_the_mean_over_seeds_and_flag_gaps_within_one_std():
    recs = [_rec("video", "evtp", 0.05, v, seed=s) for s, v in enumerate((0.50, 0.54))] + \
           [_rec("video", "tome", 0.05, v, seed=s) for s, v in enumerate((0.51, 0.55))]
    (c,) = [c for c in claims(aggregate(recs), ["video"]) if "every baseline" in c["claim"]]
    assert c["status"] == "miss" and "within one std" in c["detail"] and "0.520 ± 0.028" in c["detail"]


def test_speedup_is_the_median_of_paired_rounds():
    recs = [_rec("image", "dense", 1.0, 0.7), _rec("image", "evtp", 0.2, 0.6)]
    for i, (d, p) in enumerate(((100.0, 50.0), (300.0, 100.0), (100.0, 80.0))):
        recs.append({**_rec("image", "dense", 1.0, 0.7, variant=f"speed{i}"), "latency_ms": {"total": d}})
        recs.append({**_rec("image", "evtp", 0.2, 0.6, variant=f"speed{i}"), "latency_ms": {"total": p}})
    recs[0]["gmacs"], recs[1]["gmacs"] = {"total": 4.0}, {"total": 1.0}
    plain = [r for r in recs if not r["variant"]]
    rows = cost_speed_rows(recs, aggregate(plain), "image")
    assert [r["ratio"] for r in rows] == [1.0, 0.2]
    assert rows[1]["speedup"] == pytest.approx(2.0) and rows[1]["speedup_min"] == pytest.approx(1.25)
    assert rows[1]["speedup_max"] == pytest.approx(3.0) and rows[1]["flop_ratio"] == pytest.approx(4.0)
    assert rows[1]["latency_ms.total"] == pytest.approx(80.0)


def test_correlations_need_three_distinct_points():
    pts = [{"method": m, "ratio": 0.1, "coverage_radius": r, "giou": g}
           for m, r, g in (("a", 1.0, 0.5), ("b", 2.0, 0.4), ("c", 3.0, 0.45))]
    c = correlations(pts, "giou")
    assert c["all"]["n"] == 3 and c["all"]["spearman"] == pytest.approx(-0.5)
    assert correlations(pts[:2], "giou")["all"]["pearson"] is None


@pytest.mark.parametrize("argv,msg", [
    (["--ratios", "0.2,1.5"], "--ratios must lie in (0, 1)"),
    (["--ratios", "a"], "--ratios must be a comma-separated list"),
    (["--methods", "evtp,nope"], "--methods: unknown selection method(s) nope"),
    (["--seeds", "-1"], "--seeds must be integers >= 0"),
    (["--seeds", "0,0"], "--seeds repeats a value"),
    (["--limit-image", "0"], "--limit-image must be >= 1"),
    (["--run-image", "/no/such/run", "--data-image", "."], "--run-image /no/such/run is not a folder"),
    (["--run-image", "."], "--run-image needs the data"),
    (["--run-image", ".", "--data-image", ".", "--seeds", "0,1"], "--run-image has 1 run(s) but --seeds has 2"),
    (["--data-video", "/no/such/data"], "--data-video /no/such/data is not a folder"),
    (["--mask-init", "/no/such/vis"], "--mask-init /no/such/vis is not a folder"),
    (["--mask-init", ".", "--seeds", "0,1"], "--mask-init has 1 VIS run(s) but --seeds has 2"),
    (["--mask-init", ".", "--run-image", ".", "--data-image", "."], "--mask-init sets the recipe"),
])
def test_bad_options_are_one_line_errors(fake, tmp_path, capsys, argv, msg):
    assert main(_argv(tmp_path, *argv)) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
    assert fake.calls == [] and fake.trained == []


def test_argparse_errors_are_one_line_too(fake, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_argv(tmp_path, "--steps", "x"))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "invalid int value" in err and err.count("\n") == 1


def test_out_must_not_be_a_file(fake, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["bench", "ivs", "--quick", "--out", str(tmp_path / "f" / "sub")]) == 2
    assert "is an existing file" in capsys.readouterr().err


def test_a_foreign_results_file_is_refused(fake, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("a,b\n1,2\n")
    assert main(_argv(tmp_path)) == 2
    assert "is not a bench ivs results file" in capsys.readouterr().err


def test_generated_data_recipe_is_the_one_docs_ivs_documents() -> None:
    """`bench ivs` generates the data the docs' curve and 0.6 bar are measured on (docs/ivs.md)."""
    import re
    import shlex

    text = (Path(__file__).resolve().parents[1] / "docs" / "ivs.md").read_text()
    section = text[text.index("## Data used for the curve"):]
    command = re.search(r"```\n(patchprune data synth-refer .*?)\n```", section, re.S).group(1).replace("\\\n", " ")
    words = shlex.split(command)[3:]
    flags = {k.lstrip("-").replace("-", "_"): v for k, v in zip(words[::2], words[1::2])}
    assert flags.pop("out") and flags.pop("seed") == "0"
    assert {k: str(v) for k, v in bench.DATA_RECIPE.items()} == flags


def test_a_run_that_evaluates_the_other_kind_is_a_one_line_error(fake, monkeypatch, tmp_path, capsys):
    plain = fake.evaluate

    def evaluate(*args, **kwargs):
        return {**plain(*args, **kwargs), "kind": "video"}  # as if --data-image held only videos

    monkeypatch.setattr(bench, "_evaluate_fn", lambda: evaluate)
    run, data = tmp_path / "myrun", tmp_path / "mydata"
    run.mkdir()
    data.mkdir()
    assert main(_argv(tmp_path, "--run-image", str(run), "--data-image", str(data), "--methods", "evtp",
                      "--ratios", "0.1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run} evaluated video samples for a image cell" in err[0]


def test_parts_run_side_by_side_merge_into_one_report(fake, tmp_path, capsys):
    """One invocation per set (no speed rounds), then the whole configuration with --merge-from: only
    the speed cells are measured, and the report holds both sets."""
    run, data = tmp_path / "myrun", tmp_path / "mydata"
    run.mkdir()
    data.mkdir()
    common = ["bench", "ivs", "--no-progress", "--seeds", "0", "--methods", "evtp", "--ratios", "0.1",
              "--work", str(tmp_path / "work")]
    image = ["--run-image", str(run), "--data-image", str(data)]
    video = ["--run-video", str(run), "--data-video", str(data)]
    assert main(common + image + ["--speed-rounds", "0", "--out", str(tmp_path / "a")]) == 0
    assert main(common + video + ["--speed-rounds", "0", "--out", str(tmp_path / "b")]) == 0
    parts = len(fake.calls)
    # the target folder already holds an older table on fewer expressions: its rows are stale
    assert main(common + image + ["--speed-rounds", "0", "--limit-image", "5", "--out", str(tmp_path / "all")]) == 0
    fake.calls.clear()
    argv = common + image + video + ["--speed-rounds", "1", "--out", str(tmp_path / "all"),
                                     "--merge-from", f"{tmp_path / 'a'},{tmp_path / 'b'}"]
    assert main(argv) == 0
    assert fake.calls and all(c["limit"] in (8, 1) for c in fake.calls)  # speed cells only
    rows = _rows(tmp_path / "all" / "results.csv")
    assert len(rows) == parts + len(fake.calls) and {r["kind"] for r in rows} == {"image", "video"}
    assert "5" not in {r["limit"] for r in rows}  # the stale rows were replaced by the parts' ones
    readme = (tmp_path / "all" / "README.md").read_text()
    assert "## Table 1" in readme and "## Table 2" in readme
    # a part measured on other data is not merged blindly: its cells are measured again
    other = tmp_path / "otherdata"
    other.mkdir()
    fake.calls.clear()
    assert main(common + ["--run-image", str(run), "--data-image", str(other), "--speed-rounds", "0", "--out",
                          str(tmp_path / "c"), "--merge-from", str(tmp_path / "a")]) == 0
    assert fake.calls and {c["data"] for c in fake.calls} == {str(other)}
    assert main(common + image + ["--out", str(tmp_path / "d"), "--merge-from", str(tmp_path / "nope")]) == 2
    assert main(common + image + ["--out", str(tmp_path / "d"), "--merge-from", str(data)]) == 2
    assert "holds no results.csv" in capsys.readouterr().err
