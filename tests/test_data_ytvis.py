"""YouTube-VIS layout: RLE round trips, write/read round trips, clear errors, atomic writes, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from patchprune.cli import main
from patchprune.data import rle as rle_utils
from patchprune.data.io import read_json
from patchprune.data.synth import generate_video
from patchprune.data.synth_vis import write_synth_vis
from patchprune.data.ytvis import gt_as_predictions, read_ytvis, write_ytvis_split


def _videos(n=2, frames=4, size=48):
    return [generate_video(10 + i, frames=frames, size=size, video_id=i + 1, name=f"v{i}", cut_prob=0.3)
            for i in range(n)]


def test_rle_of_generated_masks_decodes_to_the_masks():
    v = generate_video(1, frames=5, size=(40, 56))
    for t in v.tracks:
        rles = rle_utils.encode_many(t.masks)
        assert all(isinstance(r["counts"], str) for r in rles)
        back = np.stack([rle_utils.decode(r, 40, 56) for r in rles])
        assert np.array_equal(back, t.masks)
        assert np.array_equal(rle_utils.decode(rle_utils.encode(t.masks[0]), 40, 56), t.masks[0])


def test_rle_other_forms_and_size_checks():
    m = np.zeros((6, 5), dtype=bool)
    m[1:4, 2:5] = True
    # Uncompressed RLE (column-major run lengths), as in YouTube-VIS 2019 train.
    flat = m.T.reshape(-1)
    counts, cur, run = [], False, 0
    for x in flat:
        if x != cur:
            counts.append(run)
            cur, run = x, 0
        run += 1
    counts.append(run)
    assert np.array_equal(rle_utils.decode({"size": [6, 5], "counts": counts}, 6, 5), m)
    poly = [[2.0, 1.0, 4.99, 1.0, 4.99, 3.99, 2.0, 3.99]]
    assert rle_utils.decode(poly, 6, 5)[2, 3]
    assert not rle_utils.decode(None, 6, 5).any()
    with pytest.raises(ValueError, match="does not match"):
        rle_utils.decode(rle_utils.encode(m), 5, 6)
    with pytest.raises(ValueError, match="sum to"):
        rle_utils.decode({"size": [6, 5], "counts": [1, 2]}, 6, 5)
    assert rle_utils.bbox(m) == [2.0, 1.0, 3.0, 3.0]
    assert rle_utils.bbox(np.zeros((3, 3), bool)) is None


def test_write_read_round_trip(tmp_path: Path):
    vids = _videos()
    path = write_ytvis_split(vids, tmp_path, "valid")
    assert path == tmp_path / "valid.json"
    data = read_json(path)
    assert {c["id"] for c in data["categories"]} == set(vids[0].categories)
    ds = read_ytvis(path)
    assert len(ds) == 2 and ds.image_root == tmp_path / "valid" / "JPEGImages"
    for orig, back in zip(vids, ds):
        assert back.video_id == orig.video_id and back.name == orig.name
        assert back.frames.shape == orig.frames.shape
        assert np.abs(back.frames.astype(int) - orig.frames.astype(int)).mean() < 12  # JPEG
        assert back.cuts == orig.cuts and back.seed == orig.seed
        assert [t.category_id for t in back.tracks] == [t.category_id for t in orig.tracks]
        for a, b in zip(orig.tracks, back.tracks):
            assert np.array_equal(a.masks, b.masks)
    ann = data["annotations"][0]
    masks = vids[0].tracks[0].masks
    for t in range(len(masks)):
        if masks[t].any():
            assert ann["areas"][t] == masks[t].sum()
            assert ann["bboxes"][t] == rle_utils.bbox(masks[t])
            assert mask_utils.area(rle_utils.to_rle(ann["segmentations"][t], 48, 48)) == masks[t].sum()
        else:
            assert ann["segmentations"][t] is None and ann["bboxes"][t] is None and ann["areas"][t] is None


def test_gt_as_predictions_keeps_every_track(tmp_path: Path):
    path = write_ytvis_split(_videos(), tmp_path, "valid")
    preds = gt_as_predictions(path)
    anns = read_json(path)["annotations"]
    assert len(preds) == len(anns)
    for p, a in zip(preds, anns):
        assert p["score"] == 1.0 and p["video_id"] == a["video_id"] and p["category_id"] == a["category_id"]
        assert [s is None for s in p["segmentations"]] == [s is None for s in a["segmentations"]]


def test_existing_split_needs_overwrite_and_failures_leave_nothing(tmp_path: Path):
    vids = _videos(1)
    write_ytvis_split(vids, tmp_path, "train")
    with pytest.raises(ValueError, match="already exists"):
        write_ytvis_split(vids, tmp_path, "train")
    write_ytvis_split(vids, tmp_path, "train", overwrite=True)

    def broken():
        yield vids[0]
        raise RuntimeError("generator failed half-way")

    with pytest.raises(RuntimeError):
        write_ytvis_split(broken(), tmp_path, "valid")
    assert not (tmp_path / "valid").exists() and not (tmp_path / "valid.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train", "train.json"]  # no temp leftovers


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return p


def test_reader_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        read_ytvis(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"videos": [')
    with pytest.raises(ValueError, match="corrupt"):
        read_ytvis(bad)
    with pytest.raises(ValueError, match="videos"):
        read_ytvis(_write(tmp_path, {"categories": []}))
    base_video = {"id": 1, "width": 8, "height": 8, "length": 2, "file_names": ["a/0.jpg", "a/1.jpg"]}
    with pytest.raises(ValueError, match="mismatched frame counts"):
        read_ytvis(_write(tmp_path, {"videos": [dict(base_video, length=3)], "categories": []}))
    seg = rle_utils.encode(np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="mismatched frame counts"):
        read_ytvis(_write(tmp_path, {"videos": [base_video], "categories": [{"id": 1, "name": "x"}],
                                     "annotations": [{"id": 1, "video_id": 1, "category_id": 1,
                                                      "segmentations": [seg]}]}))
    with pytest.raises(ValueError, match="unknown video"):
        read_ytvis(_write(tmp_path, {"videos": [base_video], "categories": [{"id": 1, "name": "x"}],
                                     "annotations": [{"id": 1, "video_id": 9, "category_id": 1,
                                                      "segmentations": [seg, seg]}]}))


def test_reader_frame_errors(tmp_path: Path):
    path = write_ytvis_split(_videos(1), tmp_path, "valid")
    ds = read_ytvis(path)
    frames = ds.frame_paths(0)
    frames[1].write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="corrupt image"):
        ds[0]
    frames[1].unlink()
    with pytest.raises(FileNotFoundError):
        ds[0]
    data = read_json(path)
    data["videos"][0]["width"] = 50
    with pytest.raises(ValueError, match="annotation says"):
        read_ytvis(_write(tmp_path, data), image_root=ds.image_root)[0]


def test_cli_synth_vis_gt_as_pred_and_eval(tmp_path: Path, capsys):
    out = tmp_path / "D"
    assert main(["data", "synth-vis", "--out", str(out), "--videos", "5", "--frames", "4", "--size", "48",
                 "--seed", "1", "--no-progress", "--cut-prob", "0.2"]) == 0
    assert (out / "train.json").is_file() and (out / "valid.json").is_file()
    assert len(read_json(out / "train.json")["videos"]) == 4
    assert len(read_json(out / "valid.json")["videos"]) == 1
    preds = tmp_path / "pred.json"
    assert main(["data", "gt-as-pred", str(out / "valid.json"), str(preds)]) == 0
    capsys.readouterr()
    assert main(["eval", "ytvis", "--gt", str(out / "valid.json"), "--pred", str(preds), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["AP"] == 1.0 and metrics["AP50"] == 1.0 and metrics["AR10"] == 1.0
    # Deterministic: the same command writes the same annotations.
    again = tmp_path / "E"
    write_synth_vis(again, videos=5, frames=4, size=48, seed=1, progress=False, cut_prob=0.2)
    assert read_json(again / "valid.json")["annotations"] == read_json(out / "valid.json")["annotations"]
    # An existing output is refused with one clear line.
    assert main(["data", "synth-vis", "--out", str(out), "--videos", "5", "--frames", "4", "--size", "48",
                 "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_contact_sheet(tmp_path: Path):
    path = write_ytvis_split(_videos(2), tmp_path, "valid")
    png = tmp_path / "sheet.png"
    assert main(["data", "contact-sheet", "--ann", str(path), "--out", str(png), "--frames", "3"]) == 0
    from PIL import Image

    with Image.open(png) as im:
        assert im.width >= 3 * 100 and im.height > 100
