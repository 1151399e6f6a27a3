"""The instructed-segmentation system on CUDA (`--device cuda`): training (and its resume), evaluation with
the pruning methods, `refer` and `bench ivs`. Skipped without a CUDA GPU; the CPU side of `--device` is
tests/test_ivs_device.py.

The CPU / GPU comparisons run with TF32 off (cuDNN enables it for convolutions by default): the two
devices then agree to float rounding, so the tolerances check the code, not the precision mode."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from patchprune.cli import main
from patchprune.data.synth_refer import write_synth_refer
from patchprune.ivs.train import TrainSettings, run_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# micro with the tiny recipe's parts (referring map from the kept tokens, conv mask stem, instruction prefix)
OVERRIDES = {"refer_map": "tokens", "mask_stem": "conv", "instruction_prefix": True}
BASELINES = ("kcenter", "divprune", "tome", "visionzip", "vispruner", "random")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cuda_ivs") / "data"
    write_synth_refer(root, images=6, videos=2, frames=3, size=64, seed=2, progress=False, min_objects=2,
                      max_objects=2, min_radius=0.2, max_radius=0.3)
    return root


def settings(data: Path, out: Path, steps: int, device: str | None, **kw) -> TrainSettings:
    return TrainSettings(data=str(data), out=str(out), config="micro", steps=steps, batch=4, lr=2e-3, warmup=2,
                         checkpoint_every=0, progress=False, video_share=0.3, seed=1, overrides=dict(OVERRIDES),
                         device=device, **kw)


@pytest.fixture(scope="module")
def cpu_run(data_dir: Path, tmp_path_factory) -> Path:
    """A CPU-trained run whose predictions are not all empty (40 steps: gIoU about 0.4 on the 4 val expressions)."""
    out = tmp_path_factory.mktemp("cuda_ivs_run") / "run"
    run_training(settings(data_dir, out, 40, None))
    return out


@pytest.fixture
def exact_fp32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def known_item(items, run: Path):
    from patchprune.ivs.tokenizer import load_tokenizer

    vocab = load_tokenizer(run).get_vocab()
    return next(it for it in items if all(w in vocab for w in it.text.split()))


@pytest.mark.parametrize("instance_weight", [0.0, 1.0])
def test_training_on_cuda_resumes_there_and_its_checkpoint_loads_on_the_cpu(instance_weight: float, data_dir: Path,
                                                                          tmp_path: Path) -> None:
    from patchprune.ivs.config import IVSConfig
    from patchprune.ivs.model import IVSModel
    from patchprune.ivs.run import load_run

    out = tmp_path / "run"
    run_training(settings(data_dir, out, 3, "cuda", instance_weight=instance_weight))
    # the resume loads weights and AdamW state into the CUDA model: a CPU state would fail the next step
    summary = run_training(settings(data_dir, out, 6, "cuda", instance_weight=instance_weight))
    assert summary["resumed_from"] == 3
    history = json.loads(_meta(out / "checkpoint.safetensors"))["history"]
    assert len(history) == 6 and all(math.isfinite(row["loss"]) for row in history)
    assert {row["video"] for row in history} == {0.0, 1.0}  # image and video batches (seed 1's draws)
    if instance_weight:
        assert all(math.isfinite(row["inst"]) for row in history if not row["video"])
    model, _, config, step = load_run(out)
    assert step == 6 and {p.device.type for p in model.parameters()} == {"cpu"}
    torch.manual_seed(1)  # the run's seed: `run_training` initialises the model under it, on the CPU
    init = IVSModel(IVSConfig.load(out)).state_dict()
    done = model.state_dict()
    changed = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, done[k])]
    assert len(changed) > 0.5 * sum(v.is_floating_point() for v in init.values())
    gpu, *_ = load_run(out, device="cuda")
    assert {p.device.type for p in gpu.parameters()} == {"cuda"}


def _meta(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()["meta"]


def test_the_train_command_on_cuda(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["train", "ivs", "--data", str(data_dir), "--out", str(out), "--config", "micro", "--steps", "2",
                 "--batch", "2", "--no-progress", "--device", "cuda"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    assert json.loads((out / "train.json").read_text())["device"] == "cuda"


@pytest.mark.parametrize("method, ratio", [("dense", 1.0), ("evtp", 0.25)])
@pytest.mark.parametrize("kind", ["image", "video"])
def test_eval_on_cuda_agrees_with_the_cpu(method: str, ratio: float, kind: str, cpu_run: Path, data_dir: Path,
                                          exact_fp32) -> None:
    from patchprune.ivs.evaluate import evaluate

    kw = dict(method=method, ratio=ratio, kind=kind, progress=False, timing=2, per_sample=True)
    cpu = evaluate(cpu_run, data_dir, **kw)
    gpu = evaluate(cpu_run, data_dir, device="cuda", **kw)
    main_metric = "giou" if kind == "image" else "jf"
    assert gpu[main_metric] == pytest.approx(cpu[main_metric], abs=0.02)
    assert gpu["kept_tokens_per_frame"] == cpu["kept_tokens_per_frame"] and gpu["samples"] == cpu["samples"]
    assert gpu["coverage_radius"] == pytest.approx(cpu["coverage_radius"], abs=0.05)
    assert len(gpu["per_sample"]) == len(cpu["per_sample"])
    # the project's counter has a formula for the CPU SDPA kernel, torch's for the CUDA ones: the same count
    for part, macs in cpu["gmacs"].items():
        assert gpu["gmacs"][part] == pytest.approx(macs, rel=1e-6), part
    assert all(math.isfinite(v) and v >= 0 for v in gpu["gmacs"].values())
    assert gpu["latency_ms"]["total"] > 0 and all(v >= 0 for v in gpu["latency_ms"].values())
    if kind == "image":
        assert cpu["giou"] > 0  # a comparison of predictions, not of empty masks


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_evaluates_on_cuda(method: str, cpu_run: Path, data_dir: Path) -> None:
    from patchprune.ivs.evaluate import evaluate

    m = evaluate(cpu_run, data_dir, method=method, ratio=0.5, progress=False, timing=1, device="cuda")
    assert m["kept_tokens_per_frame"] == 8 and 0.0 <= m["giou"] <= 1.0 and m["coverage_radius"] > 0


def test_the_eval_command_on_cuda_writes_the_per_sample_file(cpu_run: Path, data_dir: Path, tmp_path: Path,
                                                             capsys) -> None:
    path = tmp_path / "per_sample.json"
    assert main(["eval", "ivs", "--run", str(cpu_run), "--data", str(data_dir), "--method", "evtp", "--ratio", "0.25",
                 "--timing", "1", "--json", "--no-progress", "--per-sample", str(path), "--device", "cuda"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(json.loads(path.read_text())["per_sample"]) == m["samples"] == 4


def test_refer_on_cuda_writes_its_outputs(cpu_run: Path, data_dir: Path, tmp_path: Path, exact_fp32) -> None:
    from patchprune.data.video import read_video
    from patchprune.ivs.data import load_items
    from patchprune.ivs.refer import refer_segment

    item = known_item(load_items(data_dir, "image", "train", 64), cpu_run)
    image = data_dir / "refcoco" / "images" / f"{item.source}.jpg"
    summary = refer_segment(image, cpu_run, item.text, tmp_path / "img", progress=False, device="cuda")
    assert summary["frames"] == 1 and (tmp_path / "img" / "overlay.png").is_file()
    assert (tmp_path / "img" / "masks" / "00000.png").is_file()
    video = known_item(load_items(data_dir, "video", "train", 64), cpu_run)
    folder = data_dir / "ref-ytvos" / "train" / "JPEGImages" / video.source
    clip = tmp_path / "clip.mp4"
    from patchprune.data.video import VideoWriter
    from patchprune.ivs.refer import iter_input

    with VideoWriter(clip, fps=5) as writer:
        for frame in iter_input(folder):
            writer.write(frame)
    out = tmp_path / "vid"
    assert main(["refer", str(clip), "--run", str(cpu_run), "--text", video.text, "--out", str(out), "--method",
                 "evtp", "--ratio", "0.5", "--no-progress", "--device", "cuda"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert [f["frame"] for f in result["frames"]] == [0, 1, 2]
    assert all(f["kept_tokens"] == 8 and f["coverage_radius"] > 0 for f in result["frames"])
    assert len(list((out / "kept").glob("*.png"))) == 3 and read_video(out / "overlay.mp4").shape == (3, 64, 64, 3)
    cpu = tmp_path / "vid_cpu"
    assert main(["refer", str(clip), "--run", str(cpu_run), "--text", video.text, "--out", str(cpu), "--method",
                 "evtp", "--ratio", "0.5", "--no-progress"]) == 0
    on_cpu = json.loads((cpu / "result.json").read_text())["frames"]
    for g, c in zip(result["frames"], on_cpu):
        assert g["score"] == pytest.approx(c["score"], abs=1e-3)


def test_bench_ivs_on_cuda_runs_its_accuracy_and_speed_cells_there(cpu_run: Path, data_dir: Path,
                                                                   tmp_path: Path) -> None:
    import csv

    out = tmp_path / "bench"
    assert main(["bench", "ivs", "--quick", "--run-image", str(cpu_run), "--data-image", str(data_dir), "--methods",
                 "evtp", "--ratios", "0.5", "--limit-image", "2", "--speed-rounds", "1", "--out", str(out), "--work",
                 str(tmp_path / "work"), "--no-progress", "--device", "cuda"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["device"] for r in rows} == {"cuda:0"}
    assert any(r["variant"].startswith("speed") for r in rows)
    assert "on device cuda:0" in (out / "README.md").read_text()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs a GPU per rank")
def test_two_nccl_processes_train_like_one(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["train", "ivs", "--data", str(data_dir), "--config", "micro", "--steps", "1", "--batch", "4",
              "--warmup", "0", "--clip", "0", "--video-share", "0", "--no-progress", "--device", "cuda"]
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                           "patchprune.cli", *common, "--out", str(tmp_path / "two")], env=env, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors import safe_open

    def weights(path: Path) -> dict[str, torch.Tensor]:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith("module/model/")}

    one, two = weights(tmp_path / "one" / "checkpoint.safetensors"), weights(tmp_path / "two" / "checkpoint.safetensors")
    d = torch.cat([(one[k] - two[k]).flatten() for k in one if one[k].is_floating_point()])
    assert float(d.abs().max()) < 1e-2  # Adam's first step is ~lr * sign(g): equal up to a few rounding flips
