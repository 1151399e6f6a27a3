"""The VIS system on CUDA (`--device cuda`): stage 1 (MinVIS and ROVIS) and stage 2 training, resuming,
eval vis against the CPU's numbers and segment. Skipped without a CUDA GPU (CPU checks: test_vis_device.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from patchprune.cli import main
from patchprune.data.synth_vis import write_synth_vis

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = dict(img_size=64, dim=32, depth=12, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=2, decoder_heads=2,
             decoder_ffn=64, pixel_ffn=64, num_queries=5, points=64)


def settings(data_dir: Path, out: Path, **kw):
    from patchprune.vis.train import TrainSettings

    base = dict(data=str(data_dir), out=str(out), steps=2, batch=2, lr=1e-3, warmup=1, checkpoint_every=0,
                progress=False, threads=1, overrides=SMALL)
    return TrainSettings(**{**base, **kw})


def history(run: Path) -> list[dict]:
    with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as fh:
        return json.loads(fh.metadata()["meta"])["history"]


def finite_cpu_weights(run: Path) -> None:
    """The checkpoint loads into a CPU model (the default of load_run) with finite weights."""
    from patchprune.vis.run import load_run

    loaded = load_run(run)
    assert loaded.model.device == torch.device("cpu")
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cudavis") / "data"
    write_synth_vis(root, videos=4, valid_videos=2, frames=4, size=64, seed=3, progress=False,
                    min_radius=0.2, max_radius=0.3, max_objects=2)
    return root


@pytest.fixture(scope="module")
def cpu_vpp_run(data_dir: Path, tmp_path_factory) -> Path:
    """A CPU-trained VPP run without inference noise (its CUDA evaluation can then match the CPU's)."""
    from patchprune.vis.train import run_training

    root = tmp_path_factory.mktemp("cudavis_runs")
    run_training(settings(data_dir, root / "dense", steps=3))
    run_training(settings(data_dir, root / "vpp", method="vpp", target=0.4, init=str(root / "dense"), overrides=None,
                          method_options={"noise": False}))
    return root / "vpp"


def test_stage1_trains_and_resumes_on_cuda(data_dir: Path, tmp_path: Path) -> None:
    from patchprune.vis.train import run_training

    out = tmp_path / "dense"
    summary = run_training(settings(data_dir, out, device="cuda"))
    assert math.isfinite(summary["loss"]) and all(math.isfinite(h["loss"]) for h in history(out))
    assert json.loads((out / "train.json").read_text())["device"].startswith("cuda")
    finite_cpu_weights(out)
    # resumed on the GPU: the optimiser state saved from CUDA tensors goes back next to its parameters
    again = run_training(settings(data_dir, out, device="cuda", steps=3))
    assert again["resumed_from"] == 2 and math.isfinite(again["loss"]) and len(history(out)) == 3


def test_stage2_vpp_trains_on_cuda_and_loads_on_the_cpu(data_dir: Path, cpu_vpp_run: Path, tmp_path: Path) -> None:
    from patchprune.vis.train import run_training

    init = json.loads((cpu_vpp_run / "train.json").read_text())["init"]  # the CPU-trained dense run
    out = tmp_path / "vpp"
    summary = run_training(settings(data_dir, out, method="vpp", target=0.4, init=init, overrides=None, steps=3,
                                    device="cuda"))
    rows = history(out)
    assert summary["stage"] == 2 and all(math.isfinite(h["loss"]) and math.isfinite(h["sparsity"]) for h in rows)
    assert all(0 < h["pkr"] <= 1 for h in rows)
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as fh:
        assert any(k.startswith("module/policies/") for k in fh.keys())
    finite_cpu_weights(out)


def test_rovis_pair_training_and_tracking_on_cuda(data_dir: Path, tmp_path: Path) -> None:
    from patchprune.vis.evaluate import evaluate_folder
    from patchprune.vis.train import run_training

    out = tmp_path / "rovis"
    summary = run_training(settings(data_dir, out, tracker="rovis", overrides={**SMALL, "depth": 2}, device="cuda"))
    assert summary["stage"] == 1 and math.isfinite(summary["loss"])
    assert all(math.isfinite(h["pair"]) for h in history(out))
    m = evaluate_folder(out, data_dir, tracker="rovis", timing_frames=0, device="cuda")
    assert m["device"].startswith("cuda") and 0.0 <= m["AP"] <= 1.0


def test_eval_on_cuda_matches_the_cpu(data_dir: Path, cpu_vpp_run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from patchprune.vis.evaluate import evaluate_folder

    # full fp32 convolutions and matmuls (cuDNN allows TF32 by default): only float rounding may differ,
    # so no mask boundary of this tiny valid set moves across an IoU threshold by TF32's 1e-3 alone
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)

    cpu = evaluate_folder(cpu_vpp_run, data_dir, timing_frames=0)
    assert main(["eval", "vis", "--run", str(cpu_vpp_run), "--data", str(data_dir), "--device", "cuda", "--json",
                 "--timing-frames", "3", "--timing-batch", "2", "--results", str(tmp_path / "r.json")]) == 0
    gpu = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert gpu["device"].startswith("cuda") and cpu["device"] == "cpu"
    assert gpu["method"] == "vpp" and gpu["method_options"] == {"noise": False}
    assert abs(gpu["AP"] - cpu["AP"]) <= 0.02 and abs(gpu["AP_segm"] - cpu["AP_segm"]) <= 0.02
    assert abs(gpu["pkr"] - cpu["pkr"]) <= 0.02 and gpu["pkr"] < 1.0
    assert gpu["frames"] == cpu["frames"] and gpu["ioi"].keys() == cpu["ioi"].keys()
    assert gpu["gmacs"]["total"] == pytest.approx(cpu["gmacs"]["total"], rel=0.01)  # FLOPs counted on CUDA too
    assert all(0 < gpu[k][part] < float("inf") for k in ("fps", "fps_batched") for part in ("backbone", "model"))
    assert json.loads((tmp_path / "r.json").read_text())  # results back on the host, JSON-able


def test_segment_on_cuda_writes_its_outputs(data_dir: Path, cpu_vpp_run: Path, tmp_path: Path, capsys) -> None:
    video = data_dir / "valid" / "JPEGImages" / "valid_00000"
    out = tmp_path / "seg"
    assert main(["segment", str(video), "--run", str(cpu_vpp_run), "--out", str(out), "--threshold", "0",
                 "--no-progress", "--device", "cuda"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 4 and summary["pkr"] < 1.0
    frames = json.loads((out / "frames.json").read_text())
    assert len(frames) == 4 and frames[1]["keep_ratio_per_block"]["1"] < 1.0
    assert (out / "overlay.mp4").stat().st_size > 0 and (out / "index.html").is_file()
    assert json.loads((out / "results.json").read_text()) is not None
    assert len(list((out / "keep").glob("*.png"))) == 4
