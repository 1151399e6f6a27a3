"""`train ivs --instance-weight`: every annotated object of an image reaches the loss (the VIS set loss
on the <seg> queries, with a class head), videos skip it, and bad settings are one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from patchprune.cli import main
from patchprune.data.synth_refer import write_synth_refer
from patchprune.ivs.train import TrainSettings, run_training
from patchprune.train.checkpoint import checkpoint_meta


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ivs_inst") / "data"
    write_synth_refer(root, images=5, videos=2, frames=3, size=64, seed=11, progress=False, min_objects=2,
                      max_objects=3, min_distractors=0, max_distractors=1, min_radius=0.2, max_radius=0.3)
    return root


def test_image_items_carry_every_annotated_object(data_dir: Path) -> None:
    from patchprune.ivs.data import category_count, instance_targets, load_items

    images = load_items(data_dir, "image", "train", 64)
    assert images and all(it.instances is not None for it in images)
    assert category_count(images) == 6  # the generator lists its six (shape, texture) categories
    for it in images:
        inst = it.instances
        assert inst.masks.shape[1:] == (64, 64) and len(inst.labels) == inst.masks.shape[0] >= 2
        assert int(inst.labels.max()) < inst.categories
        # the referred object is one of them
        assert any(torch.equal(m, it.masks[0]) for m in inst.masks)
    targets = instance_targets(images[:2])
    assert [t.masks.shape[0] for t in targets] == [images[0].instances.masks.shape[0], images[1].instances.masks.shape[0]]
    videos = load_items(data_dir, "video", "train", 64)
    assert all(it.instances is None for it in videos)
    assert instance_targets(videos[:1]) is None and category_count(videos) == 0


def test_instance_loss_reaches_the_class_head_and_the_queries_and_falls(data_dir: Path) -> None:
    from patchprune.ivs.config import named_config
    from patchprune.ivs.data import instance_targets, load_items, make_batch
    from patchprune.ivs.loss import InstanceLoss
    from patchprune.ivs.model import IVSModel
    from patchprune.ivs.tokenizer import build_tokenizer

    items = load_items(data_dir, "image", "train", 64)[:2]
    tok = build_tokenizer([it.text for it in items])
    torch.manual_seed(0)
    cfg = named_config("micro", vocab_size=tok.get_vocab_size(), instance_classes=6)
    model = IVSModel(cfg)
    batch, _, _ = make_batch(items, [0, 0], tok, cfg.ref_frames)
    loss = InstanceLoss(cfg)
    targets = instance_targets(items)
    out = model(batch)
    assert [c.shape for c in out.class_logits] == [(2, cfg.seg_queries, 7)] * (cfg.decoder_layers + 1)
    first = loss(out, targets, [1, 2])
    assert torch.isfinite(first["loss"]) and set(first) >= {"loss", "ce", "mask", "dice"}
    first["loss"].backward()
    assert model.class_head.weight.grad.abs().sum() > 0
    assert model.seg_slots.grad.abs().sum() > 0  # through the decoder into the language model's slots
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        opt.zero_grad()
        value = loss(model(batch), targets, [1, 2])["loss"]
        value.backward()
        opt.step()
    assert float(value.detach()) < 0.8 * float(first["loss"].detach())
    plain = IVSModel(named_config("micro", vocab_size=tok.get_vocab_size()))
    assert plain.class_head is None
    with pytest.raises(ValueError, match="class head"):
        loss(plain(batch), targets, [1, 2])


def test_training_with_the_instance_loss_records_it_on_image_steps_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    s = TrainSettings(data=str(data_dir), out=str(out), config="micro", steps=4, batch=2, lr=1e-3, warmup=1,
                      checkpoint_every=2, threads=1, progress=False, instance_weight=1.0, video_share=0.5)
    run_training(s)
    assert json.loads((out / "config.json").read_text())["instance_classes"] == 6
    assert json.loads((out / "train.json").read_text())["instance_weight"] == 1.0
    history = checkpoint_meta(out / "checkpoint.safetensors")["history"]
    assert len(history) == 4
    for row in history:
        assert ("inst" in row) == (row["video"] == 0.0)
    assert any("inst" in row for row in history) and any("inst" not in row for row in history)
    run_training(TrainSettings(**{**s.__dict__, "steps": 5}))
    assert len(checkpoint_meta(out / "checkpoint.safetensors")["history"]) == 5


@pytest.mark.parametrize("flag", ["--instance-weight", "--query-weight"])
def test_a_negative_loss_weight_is_a_one_line_error(flag: str, data_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["train", "ivs", "--data", str(data_dir), "--config", "micro", "--steps", "1", "--threads", "1",
            "--no-progress", "--out", str(tmp_path / "r"), flag, "-1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1, err


def test_instance_weight_needs_annotated_images(tmp_path: Path, capsys) -> None:
    root = tmp_path / "videos_only"
    write_synth_refer(root, images=0, videos=2, frames=3, size=64, seed=3, progress=False, min_objects=2,
                      max_objects=2, min_distractors=0, max_distractors=0, min_radius=0.2, max_radius=0.3)
    args = ["train", "ivs", "--data", str(root), "--config", "micro", "--steps", "1", "--threads", "1",
            "--no-progress", "--out", str(tmp_path / "r"), "--instance-weight", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--instance-weight needs image data" in err and len(err.splitlines()) == 1, err
