"""`train ivs --mask-init VIS_RUN`: the mask branch takes a dense VIS run's shape and weights (encoder,
pyramid, pixel decoder, masked-attention decoder, the first query positions), training starts from
them, and runs that do not fit are one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from patchprune.cli import main
from patchprune.data.synth_refer import write_synth_refer
from patchprune.data.synth_vis import write_synth_vis
from patchprune.ivs.train import TrainSettings, run_training

VIS_SHAPE = dict(img_size=64, patch_size=16, dim=32, depth=2, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=1,
                 decoder_heads=2, decoder_ffn=64, pixel_layers=1, pixel_ffn=64, num_queries=5, points=64)


@pytest.fixture(scope="module")
def vis_run(tmp_path_factory) -> Path:
    from patchprune.vis.train import TrainSettings as VISSettings
    from patchprune.vis.train import run_training as train_vis

    root = tmp_path_factory.mktemp("mask_init")
    write_synth_vis(root / "vis", videos=3, valid_videos=1, frames=2, size=64, seed=4, progress=False,
                    min_radius=0.2, max_radius=0.3, max_objects=2)
    out = root / "vis_run"
    train_vis(VISSettings(data=str(root / "vis"), out=str(out), steps=2, batch=2, lr=1e-3, warmup=1, progress=False,
                          threads=1, overrides=VIS_SHAPE))
    return out


@pytest.fixture(scope="module")
def refer_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mask_init_refer") / "data"
    write_synth_refer(root, images=4, videos=2, frames=3, size=64, seed=5, progress=False, min_objects=2,
                      max_objects=2, min_distractors=0, max_distractors=1, min_radius=0.2, max_radius=0.3)
    return root


def test_branch_takes_the_vis_runs_shape_and_weights(vis_run: Path) -> None:
    from patchprune.ivs.config import named_config
    from patchprune.ivs.mask_init import init_mask_branch, shape_overrides
    from patchprune.ivs.model import IVSModel
    from patchprune.vis.run import load_run

    cfg = named_config("micro", **shape_overrides(vis_run, 64, 16))
    assert (cfg.mask_depth, cfg.mask_dim, cfg.decoder_layers, cfg.seg_queries) == (2, 32, 1, 3)
    model = IVSModel(cfg)
    before = {k: v.clone() for k, v in model.mask_branch.state_dict().items()}
    assert init_mask_branch(model.mask_branch, vis_run) == 2
    vis = load_run(vis_run, method="dense").model.state_dict()
    branch = model.mask_branch.state_dict()
    assert torch.equal(branch["encoder.blocks.1.mlp.fc2.weight"], vis["backbone.blocks.1.mlp.fc2.weight"])
    assert torch.equal(branch["pyramid.levels.0.0.0.weight"], vis["pyramid.levels.0.0.0.weight"])
    dec = "transformer.decoder.layers.0.cross_attn.in_proj_weight"
    assert torch.equal(branch[dec], vis["head." + dec])
    q = "transformer.queries_embedder.weight"
    assert torch.equal(branch[q], vis["head." + q][:3])  # the first seg_queries of the VIS run's 5
    changed = [k for k in branch if not torch.equal(branch[k], before[k])]
    assert len(changed) > 0.8 * len(branch)


def test_instance_class_head_takes_the_vis_class_head_when_the_categories_agree(vis_run: Path) -> None:
    from patchprune.ivs.config import named_config
    from patchprune.ivs.mask_init import init_mask_branch, shape_overrides
    from patchprune.ivs.model import IVSModel
    from patchprune.vis.run import load_run

    vis = load_run(vis_run, method="dense").model.state_dict()
    same = IVSModel(named_config("micro", instance_classes=6, **shape_overrides(vis_run, 64, 16)))
    init_mask_branch(same.mask_branch, vis_run, same.class_head)
    assert torch.equal(same.class_head.weight, vis["head.class_head.weight"])
    assert torch.equal(same.class_head.bias, vis["head.class_head.bias"])
    other = IVSModel(named_config("micro", instance_classes=3, **shape_overrides(vis_run, 64, 16)))
    before = other.class_head.weight.clone()
    init_mask_branch(other.mask_branch, vis_run, other.class_head)  # 3 categories against 6: left alone
    assert torch.equal(other.class_head.weight, before)


def test_train_ivs_starts_from_the_vis_run_and_refuses_what_does_not_fit(vis_run: Path, refer_data: Path,
                                                                          tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    s = TrainSettings(data=str(refer_data), out=str(out), config="micro", steps=1, batch=2, lr=1e-3, warmup=1,
                      checkpoint_every=1, threads=1, progress=False, mask_init=str(vis_run))
    run_training(s)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mask_depth"] == 2 and cfg["mask_dim"] == 32
    assert json.loads((out / "train.json").read_text())["mask_init"] == str(vis_run)
    run_training(TrainSettings(**{**s.__dict__, "steps": 2}))  # resumes: same shape from the same run
    args = ["train", "ivs", "--data", str(refer_data), "--config", "tiny", "--steps", "1", "--threads", "1",
            "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "t"), "--mask-init", str(vis_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mask-init" in err and "64 px / patch 16" in err and len(err.splitlines()) == 1, err
    assert main(args + ["--out", str(tmp_path / "u"), "--mask-init", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mask-init" in err and "not found" in err and len(err.splitlines()) == 1, err
