"""`patchprune refer`: a user's image / video + an instruction through a trained IVS run (dense and with
the visual tokens pruned), its files, and its errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchprune.cli import main
from patchprune.data.synth_refer import write_synth_refer
from patchprune.ivs.train import TrainSettings, run_training


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refer") / "data"
    write_synth_refer(root, images=3, videos=2, frames=3, size=64, seed=2, progress=False, min_objects=2,
                      max_objects=2, min_radius=0.2, max_radius=0.3)
    return root


@pytest.fixture(scope="module")
def run_dir(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refer_run") / "run"
    run_training(TrainSettings(data=str(data_dir), out=str(out), config="micro", steps=2, batch=2, lr=1e-3, warmup=1,
                               threads=1, progress=False, video_share=0.5, seed=1))
    return out


def known_item(items, run_dir: Path):
    """The first item whose expression uses only words the run's tokenizer learnt."""
    from patchprune.ivs.tokenizer import load_tokenizer

    vocab = load_tokenizer(run_dir).get_vocab()
    return next(it for it in items if all(w in vocab for w in it.text.split()))


def test_an_image_gets_the_mask_eval_ivs_would_predict(data_dir: Path, run_dir: Path, tmp_path: Path) -> None:
    from patchprune.data import rle
    from patchprune.ivs.data import load_items, make_batch
    from patchprune.ivs.refer import refer_segment
    from patchprune.ivs.run import load_run

    item = known_item(load_items(data_dir, "image", "train", 64), run_dir)
    image = data_dir / "refcoco" / "images" / f"{item.source}.jpg"
    summary = refer_segment(image, run_dir, item.text, tmp_path / "out", progress=False)
    assert summary["frames"] == 1 and summary["kept_tokens_per_frame"] == 16  # dense: the 4 x 4 grid
    model, tok, cfg, _ = load_run(run_dir)
    b, _, _ = make_batch([item], [0], tok, cfg.ref_frames)
    with torch.inference_mode():
        expected, score = model(b).predict((64, 64))
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    got = rle.decode(result["frames"][0]["segmentation"], 64, 64)
    assert np.array_equal(got, expected[0].numpy()) and result["frames"][0]["score"] == pytest.approx(float(score[0]))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "masks" / "00000.png")) > 0, got)
    assert Image.open(tmp_path / "out" / "overlay.png").size == (64, 64)
    assert result["words"] == item.text.split() and not (tmp_path / "out" / "kept").exists()


def test_a_video_with_pruned_visual_tokens(data_dir: Path, run_dir: Path, tmp_path: Path) -> None:
    from patchprune.data.video import read_video
    from patchprune.ivs.data import load_items

    item = known_item(load_items(data_dir, "video", "train", 64), run_dir)
    folder = data_dir / "ref-ytvos" / "train" / "JPEGImages" / item.source
    assert main(["refer", str(folder), "--run", str(run_dir), "--text", item.text, "--out", str(tmp_path / "v"),
                 "--method", "evtp", "--ratio", "0.5", "--no-progress"]) == 0
    result = json.loads((tmp_path / "v" / "result.json").read_text())
    assert [f["frame"] for f in result["frames"]] == [0, 1, 2]
    assert all(f["kept_tokens"] == 8 and f["coverage_radius"] > 0 for f in result["frames"])
    assert len(list((tmp_path / "v" / "kept").glob("*.png"))) == 3 and len(list((tmp_path / "v" / "masks").glob("*.png"))) == 3
    assert read_video(tmp_path / "v" / "overlay.mp4").shape == (3, 64, 64, 3)


@pytest.mark.parametrize("argv_tail, message", [
    (["--text", "the purple unicorn"], "vocabulary lacks 'purple', 'unicorn'"),
    (["--text", "  "], "--text is empty"),
    (["--text", "the star", "--method", "nosuch"], "nosuch"),
])
def test_bad_input_is_one_line_exit_2(argv_tail, message, data_dir: Path, run_dir: Path, tmp_path: Path,
                                      capsys) -> None:
    image = next((data_dir / "refcoco" / "images").glob("val_*.jpg"))
    assert main(["refer", str(image), "--run", str(run_dir), "--out", str(tmp_path / "o"), *argv_tail]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_missing_input_and_run(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["refer", str(tmp_path / "none.mp4"), "--run", str(run_dir), "--text", "the star", "--out",
                 str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "img.png").write_bytes(b"")
    assert main(["refer", str(tmp_path / "img.png"), "--run", str(tmp_path / "norun"), "--text", "the star",
                 "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
