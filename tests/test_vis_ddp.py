"""torchrun with 2 gloo processes: ranks split each global batch, gradients are averaged, rank 0
checkpoints; the update matches a single process on the same global batch (per-sample loss seeds make
each sample's loss independent of its batch mates; float summation order differs, hence a tolerance)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from patchprune.data.synth_vis import write_synth_vis

SCRIPT = '''
import sys, torch
from patchprune.train.distributed import init_distributed
from patchprune.vis.train import TrainSettings, run_training
from safetensors.torch import save_file
info = init_distributed("gloo")
small = dict(img_size=64, dim=32, depth=2, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=2, decoder_heads=2,
             decoder_ffn=64, pixel_ffn=64, num_queries=5, points=256)
s = TrainSettings(data=sys.argv[1], out=sys.argv[2], steps=1, batch=4, lr=1e-3, warmup=0, clip=0,
                  checkpoint_every=0, progress=False, threads=1, overrides=small)
run_training(s, info)
'''


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith("module/model/")}


def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synth_vis(data, videos=3, valid_videos=1, frames=3, size=64, seed=1, progress=False, min_radius=0.2,
                    max_radius=0.3, max_objects=2)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "one")], check=True, env=env, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(script), str(data), str(tmp_path / "two")], env=env, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    init = {}
    torch.manual_seed(0)  # the runs start from seed 0's initialisation
    from patchprune.vis.config import VISConfig
    from patchprune.vis.model import VISModel

    model = VISModel(VISConfig.load(tmp_path / "one"))
    init = {f"module/model/{k}": v for k, v in model.state_dict().items()}
    one, two = weights(tmp_path / "one" / "checkpoint.safetensors"), weights(tmp_path / "two" / "checkpoint.safetensors")
    keys = [k for k in one if one[k].is_floating_point() and not torch.equal(one[k], init[k])]
    assert len(keys) > 0.9 * len([k for k in one if one[k].is_floating_point()])
    d1 = torch.cat([(one[k] - init[k]).flatten() for k in keys])
    d2 = torch.cat([(two[k] - init[k]).flatten() for k in keys])
    cos = float(torch.nn.functional.cosine_similarity(d1, d2, dim=0))
    assert cos > 0.999, cos
    # Adam's first step is ~lr * sign(g): only gradients at rounding level may flip
    assert float(((d1 - d2).abs() > 1e-5).float().mean()) < 0.01


def test_distributed_eval_matches_one_process(tmp_path: Path) -> None:
    """`eval vis` under torchrun (2 gloo ranks, videos split round robin, results gathered on rank 0)
    gives the one-process numbers: same results JSON, AP, PKR (both forms), per-block keep ratios and
    IoI; VPP's inference noise is seeded per video, so the split cannot change what a video sees."""
    import json

    data = tmp_path / "data"
    write_synth_vis(data, videos=4, valid_videos=3, frames=3, size=64, seed=2, progress=False, min_radius=0.2,
                    max_radius=0.3, max_objects=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["eval", "vis", "--random-init", "tiny", "--method", "vpp", "--target", "0.4", "--method-option",
            "init_keep=true", "--data", str(data), "--timing-frames", "0", "--threads", "1", "--json"]
    cli = "from patchprune.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
    script = tmp_path / "eval.py"
    script.write_text(cli)
    out = {}
    for name, launcher in (("one", [sys.executable, str(script)]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                    "--master_port", str(free_port()), str(script)])):
        proc = subprocess.run(launcher + args + ["--results", str(tmp_path / f"{name}.json")], env=env, timeout=300,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = out["one"], out["two"]
    assert one["videos"] == two["videos"] == 3 and one["frames"] == two["frames"] == 9
    assert one["AP"] == two["AP"] and one["AP50"] == two["AP50"]
    for key in ("pkr", "pkr_after_first_frame", "keep_ratio_per_block", "ioi"):  # float32 sums in another order
        assert one[key] == pytest.approx(two[key], rel=1e-6, abs=1e-7), key
    assert one["pkr_after_first_frame"] < one["pkr"] < 1.0
    res_one = json.loads((tmp_path / "one.json").read_text())
    assert len(res_one) > 0 and res_one == json.loads((tmp_path / "two.json").read_text())
