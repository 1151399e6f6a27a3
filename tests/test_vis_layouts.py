"""`train vis` / `eval vis` unchanged on a YouTube-VIS folder the generator did not write: the official
2021 naming (`<split>/instances.json`), non-square frames, sparse category ids, uncompressed RLE,
no `length` field, frames named like the real set."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from patchprune.cli import main
from patchprune.data.images import write_jpeg
from patchprune.data.synth import generate_video
from patchprune.vis.data import find_split

CATEGORY_IDS = {1: 3, 2: 17, 3: 40, 4: 41, 5: 7, 6: 12}  # generator id -> "real" id


def uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def write_real_like(root: Path, split: str, seeds: list[int]) -> None:
    videos, anns = [], []
    for vid, seed in enumerate(seeds, start=1):
        s = generate_video(seed, 4, 64, video_id=vid, name=f"v{seed}", min_radius=0.2, max_radius=0.3, max_objects=2)
        frames = np.concatenate([s.frames, s.frames[:, :, :32]], axis=2)  # 64 x 96: not square
        name = f"{seed:08x}"
        files = [f"{name}/{5 * t:05d}.jpg" for t in range(4)]
        for f, fn in zip(frames, files):
            (root / split / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
            write_jpeg(root / split / "JPEGImages" / fn, f)
        videos.append({"id": vid, "width": 96, "height": 64, "file_names": files})
        for tr in s.tracks:
            m = np.concatenate([tr.masks, np.zeros_like(tr.masks[:, :, :32])], axis=2)
            segs = [uncompressed_rle(x) if x.any() else None for x in m]
            anns.append({"id": len(anns) + 1, "video_id": vid, "category_id": CATEGORY_IDS[tr.category_id],
                         "segmentations": segs, "iscrowd": 0,
                         "areas": [float(x.sum()) if x.any() else None for x in m],
                         "bboxes": [list(mask_utils.toBbox(mask_utils.encode(np.asfortranarray(x.astype(np.uint8)))))
                                    if x.any() else None for x in m]})
    cats = [{"id": c, "name": f"class{c}", "supercategory": "object"} for c in sorted(CATEGORY_IDS.values())]
    (root / split / "instances.json").write_text(json.dumps({"videos": videos, "annotations": anns, "categories": cats}))


def test_official_layout_train_and_eval(tmp_path: Path, capsys) -> None:
    root = tmp_path / "ytvis2021"
    write_real_like(root, "train", [11, 12])
    write_real_like(root, "valid", [21])
    assert find_split(root, "train")[0] == root / "train" / "instances.json"
    run = tmp_path / "run"
    assert main(["train", "vis", "--data", str(root), "--out", str(run), "--steps", "1", "--batch", "2",
                 "--threads", "1", "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["categories"] == sorted(CATEGORY_IDS.values()) and cfg["category_names"][0] == "class3"
    assert main(["eval", "vis", "--run", str(run), "--data", str(root), "--json", "--timing-frames", "0"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["videos"] == 1 and m["frames"] == 4
    results = json.loads((run / "results_valid.json").read_text())
    assert all(r["category_id"] in CATEGORY_IDS.values() for r in results)
    sizes = {tuple(s["size"]) for r in results for s in r["segmentations"] if s}
    assert sizes <= {(64, 96)}


def test_unknown_layout_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"train\.json, train/instances\.json"):
        find_split(tmp_path / "data", "train")
    (tmp_path / "data" / "train" / "instances.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        find_split(tmp_path / "data", "train")
    assert main(["train", "vis", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2


def test_resize_frames_takes_read_only_frames_without_a_warning():
    """Decoded frames can be read-only views: resizing copies them instead of warning, same values."""
    import warnings

    from patchprune.vis.data import resize_frames

    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    expected = resize_frames(frames.copy(), 32)
    frames.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = resize_frames(frames, 32)
    assert out.shape == (2, 32, 32, 3) and out.dtype == expected.dtype
    assert (out == expected).all()


def test_model_frame_size_squares_or_keeps_the_aspect():
    from patchprune.vis.data import model_frame_size, resize_frames

    assert model_frame_size(360, 640, 96) == (96, 96)  # training's square: the default
    assert model_frame_size(360, 640, 96, keep_aspect=True) == (64, 96)  # 54 -> the nearest multiple of 32
    assert model_frame_size(720, 1280, 512, keep_aspect=True) == (288, 512)
    assert model_frame_size(1280, 720, 512, keep_aspect=True) == (512, 288)  # portrait keeps its orientation
    assert model_frame_size(40, 1000, 96, keep_aspect=True) == (32, 96)  # never under one pyramid stride
    with pytest.raises(ValueError, match="frame size"):
        model_frame_size(0, 640, 96)
    frames = np.zeros((2, 36, 64, 3), dtype=np.uint8)
    assert tuple(resize_frames(frames, (32, 64)).shape) == (2, 32, 64, 3)
    assert tuple(resize_frames(frames, 32).shape) == (2, 32, 32, 3)
