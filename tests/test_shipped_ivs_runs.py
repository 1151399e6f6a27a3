"""The 576-token IVS runs committed under benchmarks/ivs/p4: `load_run` takes them as the 1,800-step
runs of their seeds, and docs/ivs.md's learning-curve rows state what each run's curve.json says."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "benchmarks" / "ivs" / "p4"
SEEDS = (0, 1, 2)
# docs/ivs.md row label -> method name
BASELINE_NAMES = {"random": "random", "k-center": "kcenter", "DivPrune": "divprune", "ToMe": "tome",
                  "VisionZip": "visionzip", "VisPruner": "vispruner"}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_shipped_run_loads_as_the_576_token_run_of_its_seed(seed: int) -> None:
    from patchprune.ivs.run import load_run

    model, tok, config, step = load_run(ROOT / f"seed{seed}")
    settings = json.loads((ROOT / f"seed{seed}" / "train.json").read_text())
    assert step == 1800 and settings["seed"] == seed and not model.training
    assert config.name == "tiny" and config.vision_patch == 4 and config.grid == (24, 24)
    assert config.vocab_size == tok.get_vocab_size()


def test_the_docs_curve_rows_are_the_curve_json_of_each_run() -> None:
    doc = (REPO / "docs" / "ivs.md").read_text()
    for seed in SEEDS:
        curve = json.loads((ROOT / f"seed{seed}" / "curve.json").read_text())
        row = re.search(rf"^\| seed {seed} \| ([\d.]+)(?: \([\d.]+\))? \|.*\| ([\d.]+)(?: \([\d.]+\))? \| ([\d.]+) \|"
                        rf" [\d.]+ \([\d.]+\) \|$", doc, re.M)
        assert row, f"no docs/ivs.md curve row for seed {seed}"
        assert float(row.group(1)) == round(curve["300"]["giou"], 3)
        assert float(row.group(2)) == round(curve["1800"]["giou"], 3)
        assert float(row.group(3)) == round(curve["1800"]["giou_swap"], 3)


def _table(name: str, value: str) -> dict[tuple[str, float], tuple[float, float]]:
    """(method, ratio) -> (mean, std) of a committed bench table CSV (its '#' header lines skipped)."""
    lines = [line for line in (ROOT / name).read_text().splitlines() if not line.startswith("#")]
    return {(r["method"], float(r["ratio"])): (float(r[f"{value}_mean"]), float(r[f"{value}_std"]))
            for r in csv.DictReader(lines)}


def test_the_committed_table_comes_from_the_shipped_runs() -> None:
    """Every cell of benchmarks/ivs/p4/results.csv was measured on the shipped run of its seed."""
    rows = list(csv.DictReader((ROOT / "results.csv").read_text().splitlines()))
    assert len(rows) >= 198
    for row in rows:
        assert row["run"] == f"benchmarks/ivs/p4/seed{row['seed']}", row
        assert (REPO / row["run"] / "checkpoint.safetensors").is_file()
    seeds = {(r["kind"], r["seed"]) for r in rows if r["method"] == "dense" and not r["variant"]}
    assert seeds == {(k, s) for k in ("image", "video") for s in ("0", "1", "2")}


@pytest.mark.parametrize("section, table, value", [("Images, gIoU", "table1_image.csv", "giou"),
                                                   ("Videos, J&F", "table2_video.csv", "jf")])
def test_the_docs_three_seed_table_is_the_committed_one(section: str, table: str, value: str) -> None:
    """docs/ivs.md's 576-token table rows state the committed CSV's mean +- std (and share of dense)."""
    doc = (REPO / "docs" / "ivs.md").read_text()
    part = doc[doc.index(f"{section} (dense"):]
    part = part[:part.index("\n\n", part.index("| --- |"))]
    cells = _table(table, value)
    dense = cells[("dense", 1.0)]
    assert f"(dense {dense[0]:.3f} +- {dense[1]:.3f}" in part
    names = {**BASELINE_NAMES, "EVTP": "evtp"}
    seen = 0
    for line in part.splitlines():
        cols = [c.strip().strip("*") for c in line.strip("|").split("|")]
        if cols[0] not in names:
            continue
        seen += 1
        for ratio, text in zip((0.05, 0.1, 0.2), cols[1:]):
            mean, std = cells[(names[cols[0]], ratio)]
            assert text == f"{mean:.3f} +- {std:.3f} ({mean / dense[0]:.3f})", (cols[0], ratio, text)
    assert seen == len(names)


def test_the_docs_paired_table_is_the_committed_one() -> None:
    """docs/ivs.md's paired-difference table states paired_image.json / paired_video.json (3 decimals)."""
    doc = (REPO / "docs" / "ivs.md").read_text()
    part = doc[doc.index("| EVTP - baseline | images 5 %"):]
    part = part[:part.index("\n\n")]
    names = BASELINE_NAMES
    rows = {}
    for kind in ("image", "video"):
        for r in json.loads((ROOT / f"paired_{kind}.json").read_text())["rows"]:
            rows[(kind, r["baseline"], r["ratio"])] = r

    def fmt(x: float) -> str:
        text = f"{x:+.3f}"
        return "-0.000" if text == "+0.000" and x < 0 else text

    cells = [(k, r) for k in ("image", "video") for r in (0.05, 0.1, 0.2)]
    seen = 0
    for line in part.splitlines()[2:]:
        cols = [c.strip() for c in line.strip("|").split("|")]
        method = names[cols[0]]
        for (kind, ratio), raw in zip(cells, cols[1:]):
            r = rows[(kind, method, ratio)]
            assert raw.replace("**", "") == f"{fmt(r['mean'])} [{fmt(r['lo'])}, {fmt(r['hi'])}]", (method, kind, ratio)
            assert raw.startswith("**") == (r["lo"] > 0 or r["hi"] < 0), ("bold", method, kind, ratio)
        seen += 1
    assert seen == len(names)


def test_the_docs_speed_table_is_table3() -> None:
    """docs/ivs.md's speed rows (FLOP ratio, measured speed-up, efficiency) are table3_cost_speed.csv's,
    so a recount of the GMACs (or a new speed run) cannot leave the docs behind."""
    doc = (REPO / "docs" / "ivs.md").read_text()
    lines = [line for line in (ROOT / "table3_cost_speed.csv").read_text().splitlines() if not line.startswith("#")]
    rows = [r for r in csv.DictReader(lines) if r["method"] == "evtp"]
    assert len(rows) == 6
    for r in rows:
        pct = f"{float(r['ratio']) * 100:g} %"
        row = re.search(rf"^\| {r['kind']} \| (?:\*\*)?{pct}(?:\*\*)? \| (?:\*\*)?([\d.]+)(?:\*\*)? \| "
                        rf"(?:\*\*)?([\d.]+) \([\d.]+-[\d.]+\)(?:\*\*)? \| ([\d.]+) \|$", doc, re.M)
        assert row, f"no docs/ivs.md speed row for {r['kind']} {pct}"
        ratio, speedup = float(r["flop_ratio"]), float(r["speedup"])
        assert float(row.group(1)) == round(ratio, 2)
        assert float(row.group(2)) == round(speedup, 2)
        assert float(row.group(3)) == round(speedup / ratio, 2)
