"""`--device` of `train vis`, `eval vis`, `segment` and `bench vis` on the CPU: the default and an explicit
`--device cpu` give the same weights and metrics, the functions take a torch.device too, and a device
this machine lacks is a one-line error naming `--device` (GPU runs: tests/test_cuda_vis.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from patchprune.cli import build_parser, main
from patchprune.data.synth_vis import write_synth_vis
from tests.test_vis_train import tensors as prefixed_tensors

TINY = dict(img_size=64, dim=32, depth=12, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=2, decoder_heads=2,
            decoder_ffn=64, pixel_ffn=64, num_queries=5, points=64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("visdev") / "data"
    write_synth_vis(root, videos=3, valid_videos=2, frames=3, size=64, seed=2, progress=False,
                    min_radius=0.2, max_radius=0.3, max_objects=2)
    return root


def train(data_dir: Path, out: Path, device) -> dict:
    from patchprune.vis.train import TrainSettings, run_training

    return run_training(TrainSettings(data=str(data_dir), out=str(out), steps=2, batch=2, lr=1e-3, warmup=1,
                                      checkpoint_every=0, progress=False, threads=1, overrides=TINY, device=device))



def tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: the modules and the optimiser state."""
    return prefixed_tensors(path, prefix="")


@pytest.fixture(scope="module")
def default_run(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("visdev_runs") / "default"
    train(data_dir, out, None)
    return out


def test_device_help_matches_the_shared_text() -> None:
    from patchprune.validate import DEVICE_HELP
    from patchprune.vis.commands import DEVICE_HELP as VIS_HELP

    assert VIS_HELP is DEVICE_HELP
    parser = build_parser()
    for argv in (["train", "vis", "--data", "d", "--out", "o"], ["eval", "vis", "--data", "d"],
                 ["segment", "v.mp4", "--run", "r", "--out", "o"]):
        assert parser.parse_args(argv).device is None  # the CPU unless asked


def test_train_takes_a_torch_device_and_equals_the_default(data_dir: Path, default_run: Path, tmp_path: Path) -> None:
    train(data_dir, tmp_path / "obj", torch.device("cpu"))
    ref = tensors(default_run / "checkpoint.safetensors")
    got = tensors(tmp_path / "obj" / "checkpoint.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)  # weights and optimiser
    for run in (default_run, tmp_path / "obj"):
        assert json.loads((run / "train.json").read_text())["device"] == "cpu"  # recorded, JSON-able


def test_cli_train_device_cpu_is_bit_identical_to_no_device(data_dir: Path, tmp_path: Path, capsys) -> None:
    base = ["train", "vis", "--data", str(data_dir), "--steps", "2", "--batch", "2", "--lr", "1e-3", "--warmup", "1",
            "--checkpoint-every", "0", "--threads", "1", "--no-progress", "--max-videos", "2"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    capsys.readouterr()
    a, b = tensors(tmp_path / "a" / "checkpoint.safetensors"), tensors(tmp_path / "b" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # weights and optimiser state
    assert json.loads((tmp_path / "b" / "train.json").read_text())["device"] == "cpu"


def test_stage2_takes_a_torch_device(data_dir: Path, default_run: Path, tmp_path: Path) -> None:
    from patchprune.vis.train import TrainSettings, run_training

    def stage2(out: Path, device) -> dict[str, torch.Tensor]:
        run_training(TrainSettings(data=str(data_dir), out=str(out), method="vpp", target=0.4, init=str(default_run),
                                   steps=1, batch=2, lr=1e-3, warmup=0, checkpoint_every=0, progress=False,
                                   threads=1, device=device))
        return tensors(out / "checkpoint.safetensors")

    a, b = stage2(tmp_path / "a", None), stage2(tmp_path / "b", torch.device("cpu"))
    assert any(k.startswith("module/policies/") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_device_cpu_equals_the_default(data_dir: Path, default_run: Path, tmp_path: Path, capsys) -> None:
    from patchprune.vis.evaluate import evaluate_folder

    runs = []
    for extra in ([], ["--device", "cpu"]):
        assert main(["eval", "vis", "--run", str(default_run), "--data", str(data_dir), "--json", "--timing-frames",
                     "0", "--results", str(tmp_path / "r.json"), *extra]) == 0
        runs.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert runs[0] == runs[1] and runs[0]["device"] == "cpu"
    m = evaluate_folder(default_run, data_dir, timing_frames=0, device=torch.device("cpu"))
    assert m.pop("results") == json.loads((tmp_path / "r.json").read_text())
    assert m == runs[0]


def test_segment_and_load_run_take_a_device(data_dir: Path, default_run: Path, tmp_path: Path) -> None:
    from patchprune.vis.run import load_run
    from patchprune.vis.segment import segment_video

    video = data_dir / "valid" / "JPEGImages" / "valid_00000"
    a = segment_video(video, default_run, tmp_path / "a", threshold=0, progress=False)
    b = segment_video(video, default_run, tmp_path / "b", threshold=0, progress=False, device=torch.device("cpu"))
    assert a["frames"] == b["frames"] == 3
    assert (tmp_path / "a" / "frames.json").read_text() == (tmp_path / "b" / "frames.json").read_text()
    loaded = load_run(default_run, device="cpu")
    assert loaded.model.device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line_naming_device(data_dir: Path, default_run: Path, tmp_path: Path,
                                                      capsys) -> None:
    for argv in (["train", "vis", "--data", str(data_dir), "--out", str(tmp_path / "t"), "--steps", "1"],
                 ["eval", "vis", "--run", str(default_run), "--data", str(data_dir)],
                 ["segment", str(data_dir / "valid" / "JPEGImages" / "valid_00000"), "--run", str(default_run),
                  "--out", str(tmp_path / "s")],
                 ["bench", "vis", "--data", str(data_dir), "--out", str(tmp_path / "b"), "--runs",
                  str(tmp_path / "br"), "--quick"]):
        assert main(argv + ["--device", "cuda"]) == 2, argv
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and "--device" in err and "CUDA is not available" in err, err
        assert "Traceback" not in captured.err
    assert not (tmp_path / "t").exists() and not (tmp_path / "s").exists() and not (tmp_path / "br").exists()
    from patchprune.vis.evaluate import evaluate_folder

    with pytest.raises(ValueError, match="device 'cuda'"):  # the Python name in Python
        evaluate_folder(default_run, data_dir, timing_frames=0, device="cuda")


def test_bench_records_the_device_in_its_commands(tmp_path: Path) -> None:
    from patchprune.bench.vis import Cell, train_command

    parser = build_parser()
    args = parser.parse_args(["bench", "vis", "--data", "d", "--device", "cuda:1"])
    cmd = train_command(Cell("dense", None, 0), tmp_path / "r", None, args)
    assert cmd[-2:] == ["--device", "cuda:1"]
    args = parser.parse_args(["bench", "vis", "--data", "d"])
    assert "--device" not in train_command(Cell("vpp", 0.4, 0), tmp_path / "r", tmp_path / "d", args)
