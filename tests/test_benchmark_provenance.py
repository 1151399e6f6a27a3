"""Every committed table names the runs it was measured on (a `run` column or key); benchmarks/RUNS.md
says for each table folder whether those runs are shipped, and every shipped run it names exists.
A new table committed without its entry fails here: the next machine would not know it cannot be
re-measured without retraining."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _runs_in_json(obj: object, found: set[str]) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "run" and isinstance(value, str):
                found.add(value)
            else:
                _runs_in_json(value, found)
    elif isinstance(obj, list):
        for value in obj:
            _runs_in_json(value, found)


def runs_by_folder() -> dict[str, set[str]]:
    """Table folder (relative to the repository) -> the run paths its CSV / JSON files name."""
    found: dict[str, set[str]] = {}
    for path in BENCH.rglob("*.csv"):
        lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
        reader = csv.DictReader(lines)
        if reader.fieldnames and "run" in reader.fieldnames:
            found.setdefault(str(path.parent.relative_to(REPO)), set()).update(r["run"] for r in reader if r["run"])
    for path in BENCH.rglob("*.json"):
        if "seed" in path.parent.name and (path.parent / "checkpoint.safetensors").exists():
            continue  # a shipped run folder's own settings, not a table
        runs: set[str] = set()
        _runs_in_json(json.loads(path.read_text()), runs)
        if runs:
            found.setdefault(str(path.parent.relative_to(REPO)), set()).update(runs)
    return found


def manifest() -> dict[str, str]:
    """Table folder -> its `shipped` column in benchmarks/RUNS.md."""
    rows = re.findall(r"^\| `(benchmarks[^`]*)` \| [^|]+ \| ([^|]+) \|", (BENCH / "RUNS.md").read_text(), re.M)
    return {folder: shipped.strip() for folder, shipped in rows}


def test_every_table_folder_is_in_the_manifest() -> None:
    found, listed = runs_by_folder(), manifest()
    assert found, "no table names its runs"
    missing = sorted(set(found) - set(listed))
    assert not missing, f"table folders not in benchmarks/RUNS.md: {missing}"
    stale = sorted(set(listed) - set(found))
    assert not stale, f"benchmarks/RUNS.md lists folders that name no runs: {stale}"


def test_shipped_runs_exist_and_shipped_all_means_all() -> None:
    found, listed = runs_by_folder(), manifest()
    for folder, runs in found.items():
        for run in runs:
            if run.startswith("benchmarks/"):
                assert (REPO / run / "checkpoint.safetensors").is_file(), f"{folder} names {run}: not shipped"
        if listed[folder] == "all":
            assert all(r.startswith("benchmarks/") for r in runs), f"{folder}: listed as all shipped, names {runs}"
        if listed[folder].startswith("none"):
            assert not any(r.startswith("benchmarks/") for r in runs), f"{folder}: listed as none shipped"
