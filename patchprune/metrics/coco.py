"""COCO instance metrics (AP_bbox, AP_segm, ...) with pycocotools' COCOeval, without console noise."""
from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any, Sequence

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from patchprune.data.io import read_json
from patchprune.metrics.ytvis import summarize

_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_instance_eval(gt: str | Path | dict[str, Any], results: str | Path | list[dict[str, Any]],
                       iou_types: Sequence[str] = ("bbox", "segm")) -> dict[str, float]:
    """COCO metrics per IoU type, keyed like "AP_bbox", "AP50_segm", "AR100_bbox".

    gt: COCO instances JSON (path or dict); results: COCO results list (path or list) with
    image_id, category_id, score and bbox and/or segmentation. With no results every metric is
    0 (or -1 where the ground truth has nothing in that area range, the COCO convention).
    """
    gt_data = read_json(gt, "COCO annotation file") if isinstance(gt, (str, Path)) else copy.deepcopy(gt)
    res = read_json(results, "results file") if isinstance(results, (str, Path)) else copy.deepcopy(results)
    if not isinstance(gt_data, dict) or not isinstance(gt_data.get("images"), list):
        raise ValueError("ground truth must be a COCO instances dict with 'images', 'annotations', 'categories'")
    if not isinstance(res, list):
        raise ValueError("results must be a list of {image_id, category_id, bbox|segmentation, score}")
    for t in iou_types:
        if t not in ("bbox", "segm"):
            raise ValueError(f"unknown iou type {t!r}; expected 'bbox' or 'segm'")
    gt_data.setdefault("annotations", [])
    gt_data.setdefault("categories", [])
    image_ids = {int(im["id"]) for im in gt_data["images"]}
    for k, r in enumerate(res):
        if not isinstance(r, dict) or "image_id" not in r or "category_id" not in r or "score" not in r:
            raise ValueError(f"result {k} lacks image_id / category_id / score")
        if int(r["image_id"]) not in image_ids:
            raise ValueError(f"result {k} refers to image {r['image_id']}, which is not in the ground truth")
    coco_gt = COCO()
    coco_gt.dataset = gt_data
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        for t in iou_types:
            usable = [r for r in res if (t == "segm" and "segmentation" in r) or (t == "bbox" and ("bbox" in r or "segmentation" in r))]
            if t == "segm" and res and not usable:
                raise ValueError("segm evaluation needs results with 'segmentation'")
            if usable:
                coco_dt = coco_gt.loadRes(copy.deepcopy(usable))
            else:
                coco_dt = COCO()
                coco_dt.dataset = {"images": gt_data["images"], "categories": gt_data["categories"], "annotations": []}
                coco_dt.createIndex()
            ev = COCOeval(coco_gt, coco_dt, iouType=t)
            ev.evaluate()
            ev.accumulate()
            stats = summarize(ev)
            out.update({f"{k}_{t}": stats[k] for k in _KEYS})
    return out
