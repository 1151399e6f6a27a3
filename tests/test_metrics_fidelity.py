"""The metrics agree with independent reimplementations of the official evaluators' published definitions.

Each reference below is written here from the published algorithm, on plain numpy masks (no RLEs,
no pycocotools, no call into patchprune.metrics):
- YouTube-VIS (youtubevos `ytvoseval.py` = COCOeval over videos): spatio-temporal IoU with crowd
  tracks getting the plain IoU, crowd tracks as ignored regions that may absorb several detections,
  area range by the mean of the file's per-frame `areas` (null / 0 skipped) or of the mask areas,
  greedy matching per IoU threshold, 101-point interpolated precision, recall, 12 summary numbers.
- DAVIS F (davis2017-evaluation `f_measure` / `_seg2bmap`): a per-pixel loop for the boundary map,
  matching by brute-force distances between boundary pixels (radius ceil(0.008 x diagonal)).
- Semi-supervised object set: ids 1..max of the first ground-truth frame.
- Referring cIoU (LISA / ReLA): 0 when the total union is 0; ignore pixels out of both sums.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from patchprune.cli import main
from patchprune.metrics.davis import boundary_f, boundary_map, davis_eval, davis_sequence, decay
from patchprune.metrics.refer import ReferMeter, refer_iou
from patchprune.metrics.ytvis import YTVIS_AREA_RANGES, ytvis_eval

# --------------------------------------------------------------------------------------------------
# YouTube-VIS: reference evaluator
# --------------------------------------------------------------------------------------------------

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def ref_track_iou(d: list, g: list, shape: tuple[int, int]) -> float:
    """sum_t |D_t ∩ G_t| / sum_t |D_t ∪ G_t|, a missing frame being an empty mask; 0 on an empty union."""
    empty = np.zeros(shape, dtype=bool)
    inter = union = 0
    for dm, gm in zip(d, g):
        dm = empty if dm is None else dm
        gm = empty if gm is None else gm
        inter += int((dm & gm).sum())
        union += int((dm | gm).sum())
    return inter / union if union > 0 else 0.0


def ref_mean_area(areas: list) -> float:
    """Mean over the truthy per-frame areas (the official `avg_area`)."""
    kept = [a for a in areas if a]
    return float(sum(kept) / len(kept)) if kept else 0.0


def ref_match_video(gts: list[dict], dts: list[dict], shape, rng_lo: float, rng_hi: float):
    """Greedy COCO matching of one (video, category) at every IoU threshold.

    Returns dt scores [D] (score order), dt matched [T, D], dt ignored [T, D], gt ignored [G].
    """
    dts = sorted(dts, key=lambda d: -d["score"])[: MAX_DETS[-1]]
    gt_ignored = np.array([bool(g["crowd"]) or not (rng_lo <= g["area"] <= rng_hi) for g in gts], dtype=bool)
    order = sorted(range(len(gts)), key=lambda j: gt_ignored[j])  # regular tracks first (stable)
    gts = [gts[j] for j in order]
    gt_ignored = gt_ignored[order]
    ious = np.array([[ref_track_iou(d["masks"], g["masks"], shape) for g in gts] for d in dts]).reshape(len(dts), len(gts))
    n_t, n_d = len(IOU_THRS), len(dts)
    dt_matched = np.zeros((n_t, n_d), dtype=bool)
    dt_ignored = np.zeros((n_t, n_d), dtype=bool)
    for ti, thr in enumerate(IOU_THRS):
        gt_taken = np.zeros(len(gts), dtype=bool)
        for di in range(n_d):
            best, m = min(thr, 1 - 1e-10), -1
            for gj, g in enumerate(gts):
                if gt_taken[gj] and not g["crowd"]:
                    continue  # a regular track matches once; a crowd region absorbs any number
                if m > -1 and not gt_ignored[m] and gt_ignored[gj]:
                    break  # already on a regular track: ignored tracks cannot win
                if ious[di, gj] < best:
                    continue
                best, m = ious[di, gj], gj
            if m > -1:
                dt_matched[ti, di] = True
                dt_ignored[ti, di] = gt_ignored[m]
                gt_taken[m] = True
    outside = np.array([not (rng_lo <= d["area"] <= rng_hi) for d in dts], dtype=bool)
    dt_ignored |= ~dt_matched & outside[None, :]
    return np.array([d["score"] for d in dts]), dt_matched, dt_ignored, gt_ignored


def ref_ytvis(gt_tracks: list[dict], dt_tracks: list[dict], videos: dict, cats: list[int],
              area_ranges: list[list[float]]) -> dict[str, float]:
    """The 12 YouTube-VIS numbers from tracks {video, cat, masks, crowd / score, area}."""
    n_t, n_r, n_k, n_a, n_m = len(IOU_THRS), len(REC_THRS), len(cats), len(area_ranges), len(MAX_DETS)
    precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    for ki, c in enumerate(cats):
        for ai, (lo, hi) in enumerate(area_ranges):
            per_video = []
            for v in sorted(videos):
                g = [t for t in gt_tracks if t["video"] == v and t["cat"] == c]
                d = [t for t in dt_tracks if t["video"] == v and t["cat"] == c]
                if g or d:
                    per_video.append(ref_match_video(g, d, videos[v], lo, hi))
            if not per_video:
                continue
            n_pos = sum(int((~gi).sum()) for *_, gi in per_video)
            if n_pos == 0:
                continue
            for mi, md in enumerate(MAX_DETS):
                scores = np.concatenate([s[:md] for s, *_ in per_video])
                matched = np.concatenate([m[:, :md] for _, m, _, _ in per_video], axis=1)
                ignored = np.concatenate([i[:, :md] for _, _, i, _ in per_video], axis=1)
                rank = np.argsort(-scores, kind="mergesort")
                matched, ignored = matched[:, rank], ignored[:, rank]
                for ti in range(n_t):
                    tp = np.cumsum(matched[ti] & ~ignored[ti])
                    fp = np.cumsum(~matched[ti] & ~ignored[ti])
                    rc = tp / n_pos
                    pr = tp / np.maximum(tp + fp, np.spacing(1))
                    recall[ti, ki, ai, mi] = rc[-1] if rc.size else 0.0
                    envelope = np.maximum.accumulate(pr[::-1])[::-1] if pr.size else pr
                    q = np.zeros(n_r)
                    for ri, r in enumerate(REC_THRS):
                        reach = np.nonzero(rc >= r)[0]
                        if reach.size:
                            q[ri] = envelope[reach[0]]
                    precision[ti, :, ki, ai, mi] = q

    def mean(x):
        x = x[x > -1]
        return float(x.mean()) if x.size else -1.0

    out = {"AP": mean(precision[:, :, :, 0, -1]), "AP50": mean(precision[0, :, :, 0, -1]),
           "AP75": mean(precision[5, :, :, 0, -1]), "APs": mean(precision[:, :, :, 1, -1]),
           "APm": mean(precision[:, :, :, 2, -1]), "APl": mean(precision[:, :, :, 3, -1])}
    for mi, md in enumerate(MAX_DETS):
        out[f"AR{md}"] = mean(recall[:, :, 0, mi])
    out.update(ARs=mean(recall[:, :, 1, -1]), ARm=mean(recall[:, :, 2, -1]), ARl=mean(recall[:, :, 3, -1]))
    return out


# --------------------------------------------------------------------------------------------------
# YouTube-VIS: random cases
# --------------------------------------------------------------------------------------------------

def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


def _random_box(rng, shape) -> np.ndarray:
    H, W = shape
    h, w = rng.integers(2, H // 2 + 2), rng.integers(2, W // 2 + 2)
    y, x = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    m = np.zeros(shape, dtype=bool)
    m[y:y + h, x:x + w] = True
    return m


def _jitter(rng, m: np.ndarray | None) -> np.ndarray | None:
    if m is None:
        return None
    out = np.roll(m, (int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(0, 1))
    if rng.random() < 0.2:
        out = ndimage.binary_dilation(out)
    return out


def _random_case(seed: int, with_areas: bool):
    """A YouTube-VIS file (dict), results list, and the same tracks as numpy masks for the reference."""
    rng = np.random.default_rng(seed)
    area_rng = np.random.default_rng(seed + 1000)  # separate, so the tracks do not depend on with_areas
    videos = {1: (24, 32), 2: (20, 20), 5: (16, 28)}
    T, cats = 4, [1, 2, 3]
    gt_file = {"videos": [{"id": v, "height": h, "width": w, "length": T} for v, (h, w) in videos.items()],
               "categories": [{"id": c, "name": f"c{c}"} for c in cats], "annotations": []}
    gt_tracks, dt_tracks, results = [], [], []
    for v, shape in videos.items():
        for j in range(rng.integers(2, 5)):
            masks = [None if rng.random() < 0.25 else _random_box(rng, shape) for _ in range(T)]
            cat, crowd = int(rng.choice(cats)), int(j == 1 or rng.random() < 0.15)
            ann = {"id": len(gt_file["annotations"]) + 1, "video_id": v, "category_id": cat, "iscrowd": crowd,
                   "segmentations": [None if m is None else _rle(m) for m in masks]}
            mask_areas = [None if m is None else int(m.sum()) for m in masks]
            if with_areas:
                # Areas as a file measured at another resolution would carry them: scaled, sometimes 0.
                scale = (1.0, 400.0, 3000.0)[len(gt_file["annotations"]) % 3]
                ann["areas"] = [None if a is None else (0 if area_rng.random() < 0.1 else a * scale) for a in mask_areas]
                area = ref_mean_area(ann["areas"])
            else:
                area = ref_mean_area(mask_areas)
            gt_file["annotations"].append(ann)
            gt_tracks.append({"video": v, "cat": cat, "masks": masks, "crowd": crowd, "area": area})
            if rng.random() < 0.8:  # a detection of this track: jittered, frames dropped, maybe mislabelled
                det = [None if rng.random() < 0.05 else _jitter(rng, m) for m in masks]
                dcat = cat if rng.random() < 0.85 else int(rng.choice(cats))
                dt_tracks.append({"video": v, "cat": dcat, "masks": det})
        for _ in range(rng.integers(1, 4)):  # false positives
            det = [None if rng.random() < 0.3 else _random_box(rng, shape) for _ in range(T)]
            dt_tracks.append({"video": v, "cat": int(rng.choice(cats)), "masks": det})
    for d in dt_tracks:
        d["score"] = float(rng.random())
        d["area"] = ref_mean_area([None if m is None else int(m.sum()) for m in d["masks"]])
        results.append({"video_id": d["video"], "category_id": d["cat"], "score": d["score"],
                        "segmentations": [None if m is None else _rle(m) for m in d["masks"]]})
    return gt_file, results, gt_tracks, dt_tracks, videos, cats


SMALL_RANGES = [[0.0, 1e10], [0.0, 60.0], [60.0, 150.0], [150.0, 1e10]]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_areas", [True, False])
def test_ytvis_matches_reference_on_random_cases(seed, with_areas):
    gt_file, results, gt_tracks, dt_tracks, videos, cats = _random_case(seed, with_areas)
    assert any(t["crowd"] for t in gt_tracks)
    # File areas are scaled into the YouTube-VIS ranges; mask areas (<= 24 x 32) need smaller ones.
    ranges = YTVIS_AREA_RANGES if with_areas else SMALL_RANGES
    ours = ytvis_eval(gt_file, results, area_ranges=None if with_areas else ranges)
    ref = ref_ytvis(gt_tracks, dt_tracks, videos, cats, ranges)
    assert set(ours) == set(KEYS)
    for k in KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-12), k
    # The random cases exercise what they claim to: not all trivially -1, 0 or 1.
    assert 0.0 < ours["AP"] < 1.0
    assert sum(ours[k] > -1 for k in ("APs", "APm", "APl")) >= 2


def test_ytvis_file_areas_are_used_only_when_present():
    gt_file, results, gt_tracks, dt_tracks, videos, cats = _random_case(11, with_areas=True)
    with_file = ytvis_eval(gt_file, results)
    for a in gt_file["annotations"]:
        del a["areas"]
    from_masks = ytvis_eval(gt_file, results)
    for t in gt_tracks:
        t["area"] = ref_mean_area([None if m is None else int(m.sum()) for m in t["masks"]])
    ref_masks = ref_ytvis(gt_tracks, dt_tracks, videos, cats, YTVIS_AREA_RANGES)
    for k in KEYS:
        assert from_masks[k] == pytest.approx(ref_masks[k], abs=1e-12), k
    # Every mask is small at these sizes; the file's areas move tracks into medium / large.
    assert from_masks["APm"] == from_masks["APl"] == -1.0 and from_masks["ARl"] == -1.0
    assert with_file["APl"] > -1 and with_file["ARl"] > -1


def _one_video(tracks, length=2, hw=(16, 16)):
    return {"videos": [{"id": 1, "height": hw[0], "width": hw[1], "length": length}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [dict({"id": i + 1, "video_id": 1, "category_id": 1,
                                  "segmentations": [None if m is None else _rle(m) for m in masks]}, **extra)
                            for i, (masks, extra) in enumerate(tracks)]}


def _box(y0, y1, x0, x1, hw=(16, 16)):
    m = np.zeros(hw, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_crowd_track_gets_plain_iou_and_is_ignored():
    """A small detection inside a crowd region: COCO's |D∩G|/|D| = 1 would hide it; the official IoU does not."""
    regular = [_box(0, 4, 0, 4), _box(0, 4, 0, 4)]
    crowd = [_box(6, 16, 0, 16), _box(6, 16, 0, 16)]  # 160 px per frame
    small = [_box(8, 10, 2, 4), _box(8, 10, 2, 4)]  # 4 px inside the crowd: plain IoU 8 / 320
    gt = _one_video([(regular, {"iscrowd": 0}), (crowd, {"iscrowd": 1})])
    dets = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [_rle(m) for m in small]},
            {"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [_rle(m) for m in regular]}]
    res = ytvis_eval(gt, dets)
    assert res["AP"] == pytest.approx(0.5)  # the small detection is a false positive ranked first
    # A detection that does overlap the crowd region (IoU >= every threshold) is ignored, twice over.
    dets[0]["segmentations"] = [_rle(m) for m in crowd]
    dets.append(dict(dets[0], score=0.8))
    res = ytvis_eval(gt, dets)
    assert res["AP"] == pytest.approx(1.0) and res["AR100"] == pytest.approx(1.0)


def test_file_areas_decide_the_area_range():
    masks = [_box(0, 4, 0, 4), None, _box(0, 4, 0, 2)]
    det = [{"video_id": 1, "category_id": 1, "score": 1.0, "segmentations": [None if m is None else _rle(m) for m in masks]}]
    plain = ytvis_eval(_one_video([(masks, {})], length=3), det)
    assert plain["APs"] == pytest.approx(1.0) and plain["ARs"] == 1.0 and plain["APl"] == plain["ARl"] == -1.0
    # Mean over the truthy entries: (70000 + 80000) / 2 = 75000 -> large (> 256² = 65536), not
    # (70000 + 0 + 80000) / 3 = 50000 -> medium.
    big = ytvis_eval(_one_video([(masks, {"areas": [70000, None, 80000]})], length=3), det)
    assert big["APl"] == pytest.approx(1.0) and big["ARl"] == 1.0 and big["APs"] == -1.0
    zero = ytvis_eval(_one_video([(masks, {"areas": [70000, 0, 80000]})], length=3), det)
    assert zero["APl"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'areas' must be a list"):
        ytvis_eval(_one_video([(masks, {"areas": [1.0]})], length=3), det)
    with pytest.raises(ValueError, match="non-negative numbers or null"):
        ytvis_eval(_one_video([(masks, {"areas": [1.0, "x", 2.0]})], length=3), det)
    with pytest.raises(ValueError, match="area_ranges"):
        ytvis_eval(_one_video([(masks, {})], length=3), det, area_ranges=[[0, 1]])


def test_eval_ytvis_command_prints_area_recalls(tmp_path, capsys):
    gt_file, results, *_ = _random_case(3, with_areas=True)
    (tmp_path / "gt.json").write_text(json.dumps(gt_file))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    assert main(["eval", "ytvis", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = ytvis_eval(gt_file, results)
    for k in ("ARs", "ARm", "ARl"):
        assert printed[k] == pytest.approx(expected[k], abs=1e-6)
    assert main(["eval", "ytvis", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")]) == 0
    text = capsys.readouterr().out
    assert all(re.search(rf"^\s+{k}\s", text, re.M) for k in ("ARs", "ARm", "ARl"))


# --------------------------------------------------------------------------------------------------
# DAVIS F: reference seg2bmap and disk matching
# --------------------------------------------------------------------------------------------------

def ref_seg2bmap(mask: np.ndarray) -> np.ndarray:
    """Per-pixel seg2bmap: differs from the right, bottom or bottom-right neighbour that exists."""
    H, W = mask.shape
    b = np.zeros((H, W), dtype=bool)
    for y in range(H):
        for x in range(W):
            if y + 1 < H and x + 1 < W:
                nbrs = [(y, x + 1), (y + 1, x), (y + 1, x + 1)]
            elif y + 1 == H and x + 1 < W:
                nbrs = [(y, x + 1)]  # last row: right neighbour only
            elif x + 1 == W and y + 1 < H:
                nbrs = [(y + 1, x)]  # last column: bottom neighbour only
            else:
                nbrs = []  # bottom-right corner
            b[y, x] = any(bool(mask[q]) != bool(mask[y, x]) for q in nbrs)
    return b


def ref_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    H, W = gt.shape
    r = bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(H * H + W * W))
    bp, bg = np.argwhere(ref_seg2bmap(pred)), np.argwhere(ref_seg2bmap(gt))
    if len(bp) == 0 and len(bg) == 0:
        return 1.0
    if len(bp) == 0 or len(bg) == 0:
        return 0.0
    d2 = ((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1)
    precision = float((d2.min(1) <= r * r).mean())
    recall = float((d2.min(0) <= r * r).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _blob(rng, shape, level=0.6) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.random(shape), sigma=max(shape) / 10)
    return noise > np.quantile(noise, level)


def _mask_pairs(rng, shape):
    gt = _blob(rng, shape)
    yield gt, gt
    yield np.roll(gt, 2, axis=1), gt
    yield ndimage.binary_erosion(gt, iterations=2), gt
    yield _blob(rng, shape, 0.5), gt
    noisy = gt ^ (rng.random(shape) < 0.03)
    yield noisy, gt
    border = np.zeros(shape, dtype=bool)
    border[shape[0] // 2:, :] = True  # touches the left, right and bottom borders
    yield border, gt
    yield border, np.ones(shape, dtype=bool)
    yield np.zeros(shape, dtype=bool), gt
    yield np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)


@pytest.mark.parametrize("shape", [(17, 23), (48, 64), (90, 160)])
def test_davis_boundary_and_f_match_reference(shape):
    rng = np.random.default_rng(shape[0])
    pairs = list(_mask_pairs(rng, shape))
    for pred, gt in pairs:
        assert np.array_equal(boundary_map(pred), ref_seg2bmap(pred))
        assert boundary_f(pred, gt) == pytest.approx(ref_f(pred, gt), abs=1e-12)
        assert boundary_f(pred, gt, bound_th=3) == pytest.approx(ref_f(pred, gt, bound_th=3), abs=1e-12)
    # Not all trivial: some pairs score strictly between 0 and 1.
    assert any(0.0 < ref_f(p, g) < 1.0 for p, g in pairs)


def test_seg2bmap_differs_from_the_four_neighbour_rule():
    """The old rule (foreground with a background 4-neighbour) gives another F: the benchmark's is used."""
    rng = np.random.default_rng(0)
    gt = _blob(rng, (48, 64))
    pred = ndimage.binary_dilation(gt, iterations=3)
    four = gt & ~ndimage.binary_erosion(gt, border_value=1)
    assert not np.array_equal(boundary_map(gt), four)
    assert boundary_f(pred, gt) == pytest.approx(ref_f(pred, gt), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# DAVIS semi-supervised object set
# --------------------------------------------------------------------------------------------------

def _ref_j(p: np.ndarray, g: np.ndarray) -> float:
    u = (p | g).sum()
    return 1.0 if u == 0 else float((p & g).sum() / u)


def test_semi_supervised_objects_are_first_frame_ids_one_to_max():
    rng = np.random.default_rng(5)
    T, shape = 5, (30, 40)
    gt = np.zeros((T, *shape), dtype=np.uint8)
    gt[0][_blob(rng, shape, 0.85)] = 3  # frame 0 holds ids {3} and void: objects are 1, 2, 3
    gt[0][:2, :2] = 255
    for t in range(1, T):
        gt[t][_blob(rng, shape, 0.85)] = 3
        gt[t][:5, :5] = 2  # id 2: absent from frame 0 but <= its max -> evaluated
        if t >= 2:
            gt[t][-6:, -6:] = 4  # id 4 appears later only -> not evaluated
    pred = gt.copy()
    pred[pred == 4] = 0
    pred[pred == 255] = 0
    pred[1:][np.roll(gt[1:] == 3, 1, axis=2)] = 3  # object 3 shifted a pixel on some frames
    per_obj = davis_sequence(pred, gt)
    assert sorted(per_obj) == [1, 2, 3]
    frames = range(1, T - 1)
    for oid in (1, 2, 3):
        ref_j = [_ref_j(pred[t] == oid, gt[t] == oid) for t in frames]
        ref_fs = [ref_f(pred[t] == oid, gt[t] == oid) for t in frames]
        assert per_obj[oid]["J"] == pytest.approx(ref_j, abs=1e-12)
        assert per_obj[oid]["F"] == pytest.approx(ref_fs, abs=1e-12)
    res = davis_eval([(pred, gt)])
    assert res["objects"] == 3
    ref_jm = np.mean([np.mean([_ref_j(pred[t] == o, gt[t] == o) for t in frames]) for o in (1, 2, 3)])
    ref_fm = np.mean([np.mean([ref_f(pred[t] == o, gt[t] == o) for t in frames]) for o in (1, 2, 3)])
    assert res["J_mean"] == pytest.approx(ref_jm) and res["F_mean"] == pytest.approx(ref_fm)
    assert res["J&F"] == pytest.approx((ref_jm + ref_fm) / 2)
    # A predicted id the first frame does not have is refused, as by the benchmark.
    bad = pred.copy()
    bad[2, -3:, -3:] = 4
    with pytest.raises(ValueError, match="object id 4"):
        davis_sequence(bad, gt)
    # Masks [K, T, H, W] with fewer objects than the ground truth: the missing ones score 0.
    stacked = np.stack([pred == 1, pred == 2])
    short = davis_sequence(stacked, gt)
    assert sorted(short) == [1, 2, 3] and short[3]["J"].max() == 0.0


def ref_decay(v) -> float:
    """Quarters with edges round-half-up(1 + i (n - 1) / 4) - 1, i = 0..4, both ends inclusive."""
    n = len(v)
    e = [math.floor(1 + i * (n - 1) / 4 + 0.5) - 1 for i in range(5)]
    return float(np.mean(v[e[0]:e[1] + 1]) - np.mean(v[e[3]:e[4] + 1]))


def test_davis_decay_matches_reference():
    assert decay(np.array([1.0, 0.9, 0.8, 0.7, 0.6])) == pytest.approx(0.95 - 0.65)
    rng = np.random.default_rng(2)
    for n in range(1, 40):
        v = rng.random(n)
        assert decay(v) == pytest.approx(ref_decay(v), abs=1e-12), n
    # davis_eval reports the object mean of the per-object decays.
    T, shape = 9, (20, 24)
    gt = np.zeros((T, *shape), dtype=np.uint8)
    gt[:, 4:14, 4:16] = 1
    gt[:, 15:19, 2:8] = 2
    pred = gt.copy()
    for t in range(T):
        pred[t][np.roll(gt[t] == 1, t // 2, axis=1)] = 1  # drifts away over time
    res = davis_eval([(pred, gt)])
    frames = range(1, T - 1)
    js = [np.array([_ref_j(pred[t] == o, gt[t] == o) for t in frames]) for o in (1, 2)]
    fs = [np.array([ref_f(pred[t] == o, gt[t] == o) for t in frames]) for o in (1, 2)]
    assert res["J_decay"] == pytest.approx(np.mean([ref_decay(j) for j in js]), abs=1e-12)
    assert res["F_decay"] == pytest.approx(np.mean([ref_decay(f) for f in fs]), abs=1e-12)
    assert res["J_decay"] > 0


# --------------------------------------------------------------------------------------------------
# Referring: cIoU with an empty union and with ignore pixels
# --------------------------------------------------------------------------------------------------

def _ref_refer(preds, targets, ignore):
    ious, inter, union = [], 0, 0
    for p, t in zip(preds, targets):
        valid = np.ones(t.shape, bool) if ignore is None else t != ignore
        fg = (t != 0) & valid
        pp = p.astype(bool) & valid
        i, u = int((pp & fg).sum()), int((pp | fg).sum())
        ious.append(1.0 if u == 0 else i / u)
        inter, union = inter + i, union + u
    return float(np.mean(ious)), (0.0 if union == 0 else inter / union)


@pytest.mark.parametrize("ignore", [None, 255])
def test_refer_ciou_with_ignore_pixels_matches_reference(ignore):
    rng = np.random.default_rng(7)
    preds, targets = [], []
    for k in range(12):
        shape = (2, 12, 16) if k % 3 == 0 else (12, 16)  # video samples too
        t = (rng.random(shape) < 0.3).astype(np.uint8)
        t[rng.random(shape) < 0.15] = 255
        if k == 4:
            t[:] = 255  # everything ignored
        preds.append(rng.random(shape) < 0.35)
        targets.append(t)
    res = refer_iou(preds, targets, ignore=ignore)
    g, c = _ref_refer(preds, targets, ignore)
    assert res["gIoU"] == pytest.approx(g, abs=1e-12) and res["cIoU"] == pytest.approx(c, abs=1e-12)
    if ignore is not None:
        plain = refer_iou(preds, targets)
        assert plain["cIoU"] != pytest.approx(res["cIoU"])


def test_refer_empty_union_gives_ciou_zero():
    empty = [np.zeros((4, 4), bool), np.zeros((2, 4, 4), bool)]
    res = refer_iou(empty, [e.copy() for e in empty])
    assert res["gIoU"] == 1.0 and res["cIoU"] == 0.0
    # Only ignored pixels referred: still no union.
    res = refer_iou([np.ones((4, 4), bool)], [np.full((4, 4), 255, np.uint8)], ignore=255)
    assert res == {"gIoU": 1.0, "cIoU": 0.0, "samples": 1.0}
    with pytest.raises(ValueError, match="ignore"):
        ReferMeter(ignore="255")


# --------------------------------------------------------------------------------------------------
# The Python examples of docs/metrics.md run
# --------------------------------------------------------------------------------------------------

def test_docs_metrics_examples_run():
    text = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "docs/metrics.md", "exec"), {})
