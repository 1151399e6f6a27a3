"""YouTube-VIS AP with spatio-temporal IoU, and COCO AP via COCOeval, on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from patchprune.data import rle as rle_utils
from patchprune.data.synth import generate_video
from patchprune.data.ytvis import track_annotation
from patchprune.metrics.coco import coco_instance_eval
from patchprune.metrics.ytvis import spatiotemporal_iou, ytvis_eval

H = W = 8


def _mask(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _rles(frames):
    return [None if f is None else rle_utils.to_rle(rle_utils.encode(f), H, W) for f in frames]


def test_spatiotemporal_iou_one_sided_frame_adds_to_union_only():
    g = _rles([_mask(0, 2, 0, 2), _mask(4, 6, 4, 6)])  # 4 px on both frames
    d = _rles([_mask(0, 2, 1, 3), None])  # 4 px on frame 0 overlapping 2 px; absent on frame 1
    iou = spatiotemporal_iou([d], [g])
    # I = 2; U = (4 + 4 - 2) + 4 = 10
    assert iou.shape == (1, 1) and iou[0, 0] == pytest.approx(0.2)
    # Per-frame IoU averaging would give (2/6 + 0) / 2 = 0.1667: the metric must not do that.
    both_absent = _rles([_mask(0, 2, 0, 2), None])
    assert spatiotemporal_iou([both_absent], [both_absent])[0, 0] == pytest.approx(1.0)
    # Crowd ground truth gets the same plain IoU (the official evaluator), not COCO's |D∩G| / |D|.
    assert spatiotemporal_iou([], [g]).shape == (0, 1)


def _gt(tracks, length=2, cats=(1, 2)):
    return {
        "videos": [{"id": 1, "width": W, "height": H, "length": length,
                    "file_names": [f"v/{t}.jpg" for t in range(length)]}],
        "categories": [{"id": c, "name": f"c{c}"} for c in cats],
        "annotations": [{"id": i + 1, "video_id": 1, "category_id": c, "iscrowd": 0,
                         "segmentations": [None if f is None else rle_utils.encode(f) for f in frames]}
                        for i, (c, frames) in enumerate(tracks)],
    }


def _pred(c, frames, score, vid=1):
    return {"video_id": vid, "category_id": c, "score": score,
            "segmentations": [None if f is None else rle_utils.encode(f) for f in frames]}


def test_gt_as_predictions_scores_one():
    tracks = [(1, [_mask(0, 3, 0, 3), _mask(1, 4, 1, 4)]), (2, [None, _mask(5, 8, 5, 8)]),
              (1, [_mask(5, 8, 0, 3), None])]
    res = ytvis_eval(_gt(tracks), [_pred(c, f, 1.0) for c, f in tracks])
    for k in ("AP", "AP50", "AP75", "AR10", "APs"):
        assert res[k] == pytest.approx(1.0)
    assert res["APm"] == -1.0  # every track is small; no medium ground truth


def test_ranking_a_false_positive_first_halves_ap():
    tracks = [(1, [_mask(0, 4, 0, 4), _mask(0, 4, 0, 4)])]
    preds = [_pred(1, [_mask(4, 8, 4, 8), _mask(4, 8, 4, 8)], 0.9),  # IoU 0 with the ground truth
             _pred(1, tracks[0][1], 0.5)]
    res = ytvis_eval(_gt(tracks), preds)
    # Precision is 1/2 at recall 1 for every IoU threshold -> interpolated AP 0.5.
    assert res["AP"] == pytest.approx(0.5)
    assert res["AR1"] == 0.0 and res["AR10"] == pytest.approx(1.0)


def test_partial_overlap_counts_only_below_its_iou():
    g = [_mask(0, 4, 0, 4), _mask(0, 4, 0, 4)]  # 16 px per frame
    d = [_mask(0, 4, 0, 4), _mask(0, 4, 0, 2)]  # I = 16 + 8 = 24, U = 16 + 16 = 32 -> 0.75
    res = ytvis_eval(_gt([(1, g)]), [_pred(1, d, 1.0)])
    assert res["AP50"] == pytest.approx(1.0)
    # Thresholds 0.50 .. 0.75 pass (6 of 10), 0.80 .. 0.95 fail.
    assert res["AP"] == pytest.approx(0.6)
    assert ytvis_eval(_gt([(1, g)]), [_pred(2, d, 1.0)])["AP"] == 0.0  # wrong category


def test_empty_results_and_errors():
    gt = _gt([(1, [_mask(0, 2, 0, 2), None])])
    assert ytvis_eval(gt, [])["AP"] == 0.0
    with pytest.raises(ValueError, match="not in the ground truth"):
        ytvis_eval(gt, [_pred(1, [None, None], 1.0, vid=5)])
    with pytest.raises(ValueError, match="segmentations for a video"):
        ytvis_eval(gt, [_pred(1, [None], 1.0)])
    with pytest.raises(ValueError, match="lacks"):
        ytvis_eval(gt, [{"video_id": 1}])


def test_ap_drops_when_a_generated_track_is_damaged():
    v = generate_video(3, frames=4, size=48)
    anns = [track_annotation(t, 1, i + 1) for i, t in enumerate(v.tracks)]
    gt = {"videos": [{"id": 1, "width": 48, "height": 48, "length": 4,
                      "file_names": [f"v/{t}.jpg" for t in range(4)]}],
          "categories": [{"id": k, "name": n} for k, n in v.categories.items()], "annotations": anns}
    preds = [{"video_id": 1, "category_id": t.category_id, "score": 1.0,
              "segmentations": rle_utils.encode_many(t.masks)} for t in v.tracks]
    assert ytvis_eval(gt, preds)["AP"] == pytest.approx(1.0)
    preds[0]["segmentations"] = rle_utils.encode_many(np.roll(v.tracks[0].masks, 9, axis=2))
    assert ytvis_eval(gt, preds)["AP"] < 1.0


def _coco_gt():
    m1, m2 = _mask(0, 4, 0, 4), _mask(4, 8, 2, 8)
    return {"images": [{"id": 1, "width": W, "height": H}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle_utils.encode(m1),
                             "area": 16.0, "bbox": rle_utils.bbox(m1), "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": rle_utils.encode(m2),
                             "area": 24.0, "bbox": rle_utils.bbox(m2), "iscrowd": 0}]}


def test_coco_ap_bbox_and_segm():
    gt = _coco_gt()
    res = [{"image_id": 1, "category_id": a["category_id"], "segmentation": a["segmentation"],
            "bbox": a["bbox"], "score": 0.9} for a in gt["annotations"]]
    out = coco_instance_eval(gt, res)
    assert out["AP_bbox"] == pytest.approx(1.0) and out["AP_segm"] == pytest.approx(1.0)
    assert "AP50_segm" in out and "AR100_bbox" in out
    res[1]["bbox"] = [2.0, 4.0, 3.0, 4.0]  # half the box: IoU 0.5
    res[1]["segmentation"] = rle_utils.encode(_mask(4, 8, 2, 5))
    out = coco_instance_eval(gt, res)
    assert out["AP50_bbox"] == pytest.approx(1.0) and out["AP_bbox"] < 1.0 and out["AP_segm"] < 1.0
    assert coco_instance_eval(gt, [])["AP_segm"] == 0.0
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_instance_eval(gt, [dict(res[0], image_id=7)])
