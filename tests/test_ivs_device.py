"""`--device` of the IVS commands on the CPU: `--device cpu` (or a torch.device) gives exactly the default's
checkpoint and metrics, `--device cuda` without CUDA is a one-line error naming `--device`, and `bench ivs`
passes its device to every cell and keeps GPU cells apart from CPU ones. The CUDA runs themselves are
tests/test_cuda_ivs.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from patchprune.cli import main
from tests.test_ivs_train import tensors
from patchprune.data.synth_refer import write_synth_refer

TRAIN = ["--config", "micro", "--steps", "2", "--batch", "2", "--lr", "1e-3", "--warmup", "1", "--threads", "1",
         "--video-share", "0.5", "--seed", "1", "--no-progress"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ivs_device") / "data"
    write_synth_refer(root, images=3, videos=2, frames=3, size=64, seed=2, progress=False, min_objects=2,
                      max_objects=2, min_radius=0.2, max_radius=0.3)
    return root


@pytest.fixture(scope="module")
def run_dir(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ivs_device_run") / "run"
    assert main(["train", "ivs", "--data", str(data_dir), "--out", str(out), *TRAIN]) == 0
    return out



def test_train_on_device_cpu_writes_the_default_checkpoint(data_dir: Path, run_dir: Path, tmp_path: Path,
                                                           capsys) -> None:
    out = tmp_path / "cpu"
    assert main(["train", "ivs", "--data", str(data_dir), "--out", str(out), *TRAIN, "--device", "cpu"]) == 0
    a, b = tensors(run_dir / "checkpoint.safetensors"), tensors(out / "checkpoint.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("optim/") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.loads((out / "train.json").read_text())["device"] == "cpu"
    assert json.loads((run_dir / "train.json").read_text())["device"] is None


def test_the_train_function_takes_a_torch_device(data_dir: Path, run_dir: Path, tmp_path: Path) -> None:
    from patchprune.ivs.train import train

    out = train(data_dir, tmp_path / "dev", config="micro", steps=2, seed=1, threads=1, progress=False, batch=2,
                lr=1e-3, warmup=1, video_share=0.5, device=torch.device("cpu"))
    a, b = tensors(run_dir / "checkpoint.safetensors"), tensors(out / "checkpoint.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "train.json").read_text())["device"] == "cpu"


@pytest.mark.parametrize("method, ratio", [("dense", "1"), ("evtp", "0.5")])
def test_eval_on_device_cpu_gives_the_default_metrics(method: str, ratio: str, run_dir: Path, data_dir: Path,
                                                      capsys) -> None:
    argv = ["eval", "ivs", "--run", str(run_dir), "--data", str(data_dir), "--method", method, "--ratio", ratio,
            "--timing", "0", "--json", "--no-progress"]
    results = []
    for extra in ([], ["--device", "cpu"]):
        assert main(argv + extra) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert results[0]["kept_tokens_per_frame"] == (16 if method == "dense" else 8)


def test_evaluate_and_load_run_take_a_torch_device(run_dir: Path, data_dir: Path) -> None:
    from patchprune.ivs.evaluate import evaluate
    from patchprune.ivs.run import load_run

    kw = dict(method="evtp", ratio=0.5, kind="video", limit=1, progress=False, timing=1, per_sample=True)
    default, cpu = evaluate(run_dir, data_dir, **kw), evaluate(run_dir, data_dir, device=torch.device("cpu"), **kw)
    for m in (default, cpu):
        del m["latency_ms"]  # measured
    assert default == cpu
    model, *_ = load_run(run_dir, device=torch.device("cpu"))
    assert {p.device.type for p in model.parameters()} == {"cpu"} and not model.training


def test_refer_on_device_cpu_writes_the_default_result(run_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    from patchprune.ivs.data import load_items
    from patchprune.ivs.refer import refer_segment
    from patchprune.ivs.tokenizer import load_tokenizer

    vocab = load_tokenizer(run_dir).get_vocab()
    item = next(it for it in load_items(data_dir, "video", "train", 64) if all(w in vocab for w in it.text.split()))
    folder = data_dir / "ref-ytvos" / "train" / "JPEGImages" / item.source
    kw = dict(method="evtp", ratio=0.5, progress=False)
    refer_segment(folder, run_dir, item.text, tmp_path / "a", **kw)
    refer_segment(folder, run_dir, item.text, tmp_path / "b", device=torch.device("cpu"), **kw)
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("a", "b"))
    assert a["frames"] == b["frames"] and len(a["frames"]) == 3
    assert sorted(p.name for p in (tmp_path / "b" / "kept").iterdir()) == ["00000.png", "00001.png", "00002.png"]


@no_cuda
@pytest.mark.parametrize("command", ["train", "eval", "refer", "bench"])
def test_device_cuda_without_cuda_is_one_line_naming_device(command: str, run_dir: Path, data_dir: Path,
                                                             tmp_path: Path, capsys) -> None:
    image = next((data_dir / "refcoco" / "images").glob("*.jpg"))
    argv = {"train": ["train", "ivs", "--data", str(data_dir), "--out", str(tmp_path / "o"), *TRAIN],
            "eval": ["eval", "ivs", "--run", str(run_dir), "--data", str(data_dir), "--no-progress"],
            "refer": ["refer", str(image), "--run", str(run_dir), "--text", "the", "--out", str(tmp_path / "o"),
                      "--no-progress"],
            "bench": ["bench", "ivs", "--quick", "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w"),
                      "--no-progress"]}[command]
    assert main(argv + ["--device", "cuda"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "--device" in err and "CUDA is not available" in err, err
    assert "Traceback" not in captured.err and not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_the_parser_help_is_the_shared_device_help() -> None:
    from patchprune import validate
    from patchprune.ivs.commands import DEVICE_HELP

    assert DEVICE_HELP is validate.DEVICE_HELP


def _bench_config(tmp_path: Path, device: str | None):
    from patchprune.bench import ivs as bench

    return bench.BenchConfig(out=tmp_path / "out", work=tmp_path / "work", quick=True, seeds=(0,), methods=("evtp",),
                             ratios=(0.2,), ladder_ratios=(0.2,), kinds=("image",), limit_image=4, limit_video=None,
                             speed_rounds=1, speed_limit_image=2, speed_limit_video=1, steps=3,
                             runs_image=(tmp_path / "run",), data_image=tmp_path / "data", device=device)


def test_bench_cells_carry_their_device_and_a_gpu_cell_is_not_a_cpu_one(tmp_path: Path) -> None:
    from patchprune.bench import ivs as bench

    calls: list[dict] = []

    def evaluate(**kw):
        calls.append(kw)
        return {"kind": kw["kind"], "giou": 0.5, "ciou": 0.5, "gmacs": {"total": 1.0}, "latency_ms": {"total": 2.0}}

    rep = bench.Replicate(0, tmp_path / "run", None)
    cell = bench.Cell("image", 0, "evtp", 0.2)
    cpu, gpu = _bench_config(tmp_path, None), _bench_config(tmp_path, "cuda:0")
    assert "--device" not in cpu.command and gpu.command.endswith("--device cuda:0")
    store = bench.ResultStore(tmp_path / "results.csv")
    store.add(bench.evaluate_cell(cell, rep, gpu, evaluate))
    assert calls[-1]["device"] == "cuda:0" and store.records[cell.key]["device"] == "cuda:0"
    assert store.is_current(cell.key, bench.cell_origin(cell, rep, gpu))
    assert not store.is_current(cell.key, bench.cell_origin(cell, rep, cpu))  # measured again on the CPU
    store.add(bench.evaluate_cell(cell, rep, cpu, evaluate))
    assert "device" not in calls[-1] and "device" not in store.records[cell.key]  # the CPU cell as before
    assert bench.ResultStore(tmp_path / "results.csv").is_current(cell.key, bench.cell_origin(cell, rep, cpu))
    assert not store.is_current(cell.key, bench.cell_origin(cell, rep, gpu))


def test_the_bench_report_says_what_the_speed_rounds_ran_on() -> None:
    from patchprune.bench.ivs_report import _meta_lines

    cfg = {"command": "c", "seeds": [0], "quick": True, "methods": ["evtp"], "ratios": [0.2], "limit_image": 4,
           "limit_video": None, "speed_rounds": 1, "speed_threads": 1}
    mach = {"platform": "p", "processor": "x", "cpus": 2, "torch_threads": 2, "torch": "2"}
    meta = {"config": cfg, "machine": mach, "date_utc": "d"}
    cpu = _meta_lines(meta)
    assert "speed rounds 1 on 1 torch thread(s)" in cpu[1] and "GPU" not in cpu[2]
    gpu = _meta_lines({**meta, "config": {**cfg, "device": "cuda:0"}, "machine": {**mach, "gpu": "NVIDIA H200"}})
    assert "speed rounds 1 on device cuda:0" in gpu[1] and gpu[2].endswith(", GPU NVIDIA H200")
