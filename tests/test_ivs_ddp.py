"""torchrun with 2 gloo processes: ranks split each global batch of `train ivs`, gradients are averaged,
rank 0 checkpoints; the update matches one process on the same global batch (the loss draws nothing
at random; float summation order differs, hence a tolerance)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from patchprune.data.synth_refer import write_synth_refer

SCRIPT = '''
import sys
from patchprune.train.distributed import init_distributed
from patchprune.ivs.train import TrainSettings, run_training
info = init_distributed("gloo")
s = TrainSettings(data=sys.argv[1], out=sys.argv[2], config="micro", steps=1, batch=4, lr=1e-3, warmup=0, clip=0,
                  checkpoint_every=0, progress=False, threads=1, video_share=0.0)
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
    write_synth_refer(data, images=5, videos=0, size=64, seed=4, progress=False, min_objects=2, max_objects=2,
                      min_radius=0.2, max_radius=0.3)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "one")], check=True, env=env, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(script), str(data), str(tmp_path / "two")], env=env, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from patchprune.ivs.config import IVSConfig
    from patchprune.ivs.model import IVSModel

    torch.manual_seed(0)  # the runs start from seed 0's initialisation
    init = {f"module/model/{k}": v for k, v in IVSModel(IVSConfig.load(tmp_path / "one")).state_dict().items()}
    one, two = weights(tmp_path / "one" / "checkpoint.safetensors"), weights(tmp_path / "two" / "checkpoint.safetensors")
    floats = [k for k in one if one[k].is_floating_point()]
    keys = [k for k in floats if not torch.equal(one[k], init[k])]
    assert len(keys) > 0.8 * len(floats)
    d1 = torch.cat([(one[k] - init[k]).flatten() for k in keys])
    d2 = torch.cat([(two[k] - init[k]).flatten() for k in keys])
    cos = float(torch.nn.functional.cosine_similarity(d1, d2, dim=0))
    assert cos > 0.999, cos
    # Adam's first step is ~lr * sign(g): only gradients at rounding level may flip
    assert float(((d1 - d2).abs() > 1e-5).float().mean()) < 0.01
