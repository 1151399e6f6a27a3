"""The 576-token IVS runs committed under benchmarks/ivs/p4: `load_run` takes them as the 1,800-step
runs of their seeds, and docs/ivs.md's learning-curve rows state what each run's curve.json says."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "benchmarks" / "ivs" / "p4"
SEEDS = (0, 1, 2)


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
