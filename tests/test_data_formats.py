"""COCO, DAVIS, RefCOCO and Ref-YouTube-VOS readers: round trips and clear errors."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from patchprune.cli import main
from patchprune.data.coco import read_coco, write_coco
from patchprune.data.davis import read_davis, write_davis
from patchprune.data.expressions import RELATIONS, SHAPE_WORDS, TEXTURE_WORDS
from patchprune.data.io import read_json
from patchprune.data.refer import RefCocoDataset, RefYTVOSDataset, load_refs
from patchprune.data.synth import CATEGORY_NAMES, generate_video
from patchprune.data.synth_refer import generate_refer_samples
from patchprune.data.types import ReferSample


def _images(n=3, size=48):
    out = []
    for i in range(n):
        v = generate_video(100 + i, frames=1, size=size, video_id=i + 1, name=f"img{i}")
        v.file_names = [f"img{i}.jpg"]
        out.append(v)
    return out


def test_coco_round_trip_and_errors(tmp_path: Path):
    imgs = _images()
    path = write_coco(imgs, tmp_path, "instances", CATEGORY_NAMES, image_dir="images")
    ds = read_coco(path)
    assert len(ds) == 3 and ds.image_root == tmp_path / "images"
    for orig, back in zip(imgs, ds):
        assert back.frames.shape == (1, 48, 48, 3)
        kept = [t for t in orig.tracks if t.masks[0].any()]
        assert [t.category_id for t in back.tracks] == [t.category_id for t in kept]
        for a, b in zip(kept, back.tracks):
            assert np.array_equal(a.masks, b.masks)
    with pytest.raises(ValueError, match="already exists"):
        write_coco(imgs, tmp_path, "instances", CATEGORY_NAMES, image_dir="images")
    (tmp_path / "images" / "img1.jpg").unlink()
    with pytest.raises(FileNotFoundError):
        ds[1]
    data = read_json(path)
    data["annotations"][0]["image_id"] = 99
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown image"):
        read_coco(bad)


def test_davis_round_trip_and_errors(tmp_path: Path):
    vids = [generate_video(20 + i, frames=4, size=48, name=f"seq{i}") for i in range(2)]
    root = write_davis(vids, tmp_path / "DAVIS")
    ds = read_davis(root, split="val")
    assert len(ds) == 2
    for orig, back in zip(vids, ds):
        assert back.name == orig.name and back.frames.shape == orig.frames.shape
        assert [t.track_id for t in back.tracks] == [t.track_id for t in orig.tracks]
        for a, b in zip(orig.tracks, back.tracks):
            assert np.array_equal(a.masks, b.masks)
    with pytest.raises(FileNotFoundError):
        read_davis(root, split="test-dev")
    with pytest.raises(FileNotFoundError):
        read_davis(tmp_path / "nowhere")
    # Only the first frame annotated (semi-supervised test protocol) is accepted ...
    ann = root / "Annotations" / "480p" / "seq0"
    for p in sorted(ann.glob("*.png"))[1:]:
        p.unlink()
    first = ds[0]
    assert all(t.masks[0].any() and not t.masks[1:].any() for t in first.tracks)
    # ... any other count is a mismatch.
    (root / "Annotations" / "480p" / "seq1" / "00002.png").unlink()
    with pytest.raises(ValueError, match="mismatched frame counts"):
        ds[1]


def test_refcoco_refs_json_and_safe_pickle(tmp_path: Path):
    imgs = _images(2)
    inst = write_coco(imgs, tmp_path, "instances", CATEGORY_NAMES, image_dir="images")
    ann_ids = [t.attributes["ann_id"] for t in imgs[0].tracks if "ann_id" in t.attributes]
    refs = [{"ref_id": 1, "image_id": 1, "ann_id": ann_ids[0], "category_id": imgs[0].tracks[0].category_id,
             "split": "val", "sentences": [{"sent_id": 5, "sent": "the thing"}, {"sent_id": 6, "raw": "that one"}]}]
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    with open(tmp_path / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    for name in ("refs.json", "refs(unc).p"):
        ds = RefCocoDataset(tmp_path / name, inst, split="val")
        assert len(ds) == 2
        s = ds[1]
        assert isinstance(s, ReferSample) and s.expression == "that one" and s.ref_id == 6
        assert np.array_equal(s.masks, imgs[0].tracks[0].masks)
    assert len(RefCocoDataset(tmp_path / "refs.json", inst, split="train")) == 0

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    with open(tmp_path / "evil.p", "wb") as f:
        pickle.dump([Evil()], f)
    with pytest.raises(ValueError, match="unsafe"):
        load_refs(tmp_path / "evil.p")
    assert not (tmp_path / "pwned").exists()
    bad = [dict(refs[0], ann_id=999)]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="annotation 999"):
        RefCocoDataset(tmp_path / "bad.json", inst)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ValueError, match="corrupt"):
        load_refs(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError):
        load_refs(tmp_path / "none.json")


def _objects_matching(video, words):
    """Objects (instances and distractors) whose attributes contain every word."""
    rev_tex = {v: k for k, v in TEXTURE_WORDS.items()}
    rev_shape = {v: k for k, v in SHAPE_WORDS.items()}
    out = []
    for o in video.tracks + video.distractors:
        a = o.attributes
        ok = True
        for w in words.split():
            ok &= a["colour"] == w or a["texture"] == rev_tex.get(w) or a["shape"] == rev_shape.get(w)
        if ok:
            out.append(o)
    return out


def test_generated_expressions_refer_to_exactly_their_target():
    rel_re = re.compile(r"^the (.+?) (" + "|".join(RELATIONS) + r") the (.+)$")
    checked = 0
    for seed in range(8):
        video, exps, samples = generate_refer_samples(seed, frames=4, size=96)
        assert len(samples) == len(exps)
        by_id = {t.track_id: t for t in video.tracks}
        for e, s in zip(exps, samples):
            assert s.masks.any() and np.array_equal(s.masks, by_id[e.track_id].masks)
            assert s.kind in ("referring", "reasoning")
            if e.kind != "referring":
                continue
            m = rel_re.match(e.text)
            if m is None:  # attribute-only: the description fits only the target
                hits = _objects_matching(video, e.text[len("the "):])
                assert [h.track_id for h in hits] == [e.track_id]
            else:
                anchors = _objects_matching(video, m.group(3))
                assert len(anchors) == 1
                tgt, anc = by_id[e.track_id], anchors[0]
                both = tgt.present & anc.present

                def centre(t):  # mean (x, y) centroid over the frames where both are visible
                    return np.mean([np.argwhere(t.masks[i])[:, ::-1].mean(0) for i in np.flatnonzero(both)], 0)

                dx, dy = centre(tgt) - centre(anc)
                expect = {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}
                assert expect[m.group(2)]
            checked += 1
    assert checked >= 10


def test_synth_refer_layouts_round_trip(tmp_path: Path):
    out = tmp_path / "R"
    assert main(["data", "synth-refer", "--out", str(out), "--images", "4", "--videos", "3", "--frames", "3",
                 "--size", "48", "--no-progress"]) == 0
    refs = out / "refcoco" / "refs.json"
    ds = RefCocoDataset(refs, out / "refcoco" / "instances.json")
    assert len(ds) > 0
    splits = {r["split"] for r in load_refs(refs)}
    assert splits <= {"train", "val"}
    s = ds[0]
    assert s.frames.shape == (1, 48, 48, 3) and s.masks.any() and s.expression.startswith("the ")
    for split in ("train", "valid"):
        vds = RefYTVOSDataset(out / "ref-ytvos", split)
        assert len(vds) > 0
        v = vds[0]
        assert v.frames.shape == (3, 48, 48, 3) and v.masks.shape == (3, 48, 48) and v.masks.any()
    meta = read_json(out / "ref-ytvos" / "meta_expressions" / "train" / "meta_expressions.json")
    vid = sorted(meta["videos"])[0]
    (out / "ref-ytvos" / "train" / "Annotations" / vid / "00001.png").unlink()
    with pytest.raises(ValueError, match="mismatched frame counts"):
        RefYTVOSDataset(out / "ref-ytvos", "train")[0]
    with pytest.raises(FileNotFoundError):
        RefYTVOSDataset(out / "ref-ytvos", "test")
