"""The run-folder pieces both training commands share: minutes clock, snapshots, summary."""
import torch
from torch import nn

from patchprune.train.checkpoint import load_checkpoint
from patchprune.train.run_folder import SNAPSHOTS, RunClock, Snapshots, run_summary


def test_clock_continues_a_resumed_run():
    logs = RunClock([{"minutes": 3.0, "cpu_minutes": 2.0}]).stamp({})
    assert 3.0 <= float(logs["minutes"]) < 3.5 and 2.0 <= float(logs["cpu_minutes"]) < 2.5
    fresh = RunClock([]).stamp({"loss": torch.tensor(1.0)})
    assert float(fresh["minutes"]) < 0.5 and "loss" in fresh


def test_snapshots_every_n_steps_and_after_the_last(tmp_path):
    model = nn.Linear(2, 2)
    snaps = Snapshots(tmp_path, {"model": model}, {"kind": "test"}, every=2)
    for step in range(5):
        snaps.step(step, {"minutes": float(step)})
    snaps.finish(5, [{"minutes": 9.0}])
    names = sorted(p.name for p in (tmp_path / SNAPSHOTS).iterdir())
    assert names == ["step_000000.safetensors", "step_000002.safetensors", "step_000004.safetensors",
                     "step_000005.safetensors"]
    other = nn.Linear(2, 2)
    info = load_checkpoint(tmp_path / SNAPSHOTS / "step_000005.safetensors", {"model": other})
    assert info["step"] == 5 and torch.equal(other.weight, model.weight)
    silent = Snapshots(tmp_path / "off", {"model": model}, {}, every=0)
    silent.step(0, {})
    silent.finish(1, [])
    assert not (tmp_path / "off").exists()
    not_main = Snapshots(tmp_path / "rank1", {"model": model}, {}, every=1, is_main=False)
    not_main.step(0, {})
    assert not (tmp_path / "rank1").exists()


def test_summary_reads_the_last_logged_step():
    s = run_summary("runs/x", 10, 4, [{"loss": 2.0}, {"loss": 1.5, "minutes": 3.0, "cpu_minutes": 2.5}], stage=2)
    assert s == {"run": "runs/x", "steps": 10, "resumed_from": 4, "stage": 2, "minutes": 3.0, "cpu_minutes": 2.5,
                 "loss": 1.5}
    assert run_summary("r", 0, 0, [])["loss"] != run_summary("r", 0, 0, [])["loss"]  # NaN: nothing logged
