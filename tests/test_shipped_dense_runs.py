"""The dense VIS runs committed under benchmarks/vis/dense1200: every run reader takes them, and the
README's table states what their own eval.json says."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "benchmarks" / "vis" / "dense1200"
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_shipped_run_loads_as_the_dense_8000_step_run_of_its_seed(seed: int) -> None:
    from patchprune.vis.run import load_run

    loaded = load_run(ROOT / f"seed{seed}")
    assert loaded.step == 8000 and loaded.encoder is None and not loaded.model.training
    assert loaded.settings["seed"] == seed and loaded.settings["method"] == "dense"
    assert loaded.model.config.name == "tiny" and len(loaded.model.config.categories) == 6


def test_the_readme_table_is_the_eval_json_of_each_run() -> None:
    readme = (ROOT / "README.md").read_text()
    for seed in SEEDS:
        m = json.loads((ROOT / f"seed{seed}" / "eval.json").read_text())
        row = re.search(rf"^\| seed{seed} \| {seed} \| 8000 \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", readme, re.M)
        assert row, f"no README row for seed{seed}"
        assert [float(x) for x in row.groups()] == [round(100 * m[k], 1) for k in ("AP", "AP50", "AP75")]
        assert m["videos"] == 120 and m["method"] == "dense"
