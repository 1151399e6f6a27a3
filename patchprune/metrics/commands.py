"""`patchprune eval ...`: score result files against ground truth (YouTube-VIS, COCO)."""
from __future__ import annotations

import argparse
import json


def _print_metrics(title: str, metrics: dict[str, float], as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: round(v, 6) for k, v in metrics.items()}))
        return
    print(title)
    for k, v in metrics.items():
        print(f"  {k:<10} {v:.4f}")


def _run_ytvis(args: argparse.Namespace) -> int:
    from patchprune.metrics.ytvis import ytvis_eval

    _print_metrics(f"YouTube-VIS metrics of {args.pred}", ytvis_eval(args.gt, args.pred), args.json)
    return 0


def _run_coco(args: argparse.Namespace) -> int:
    from patchprune.metrics.coco import coco_instance_eval

    metrics = coco_instance_eval(args.gt, args.pred, iou_types=tuple(args.iou_types))
    _print_metrics(f"COCO instance metrics of {args.pred}", metrics, args.json)
    return 0


def register(groups) -> None:
    """Add `eval ytvis` and `eval coco`."""
    p = groups.eval.add_parser("ytvis", help="YouTube-VIS AP/AR (spatio-temporal IoU) of a results JSON")
    p.add_argument("--gt", required=True, help="YouTube-VIS annotation JSON")
    p.add_argument("--pred", required=True, help="results JSON: [{video_id, category_id, segmentations, score}]")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_ytvis)

    p = groups.eval.add_parser("coco", help="COCO AP_bbox / AP_segm (pycocotools COCOeval) of a results JSON")
    p.add_argument("--gt", required=True, help="COCO instances JSON")
    p.add_argument("--pred", required=True, help="COCO results JSON: [{image_id, category_id, bbox|segmentation, score}]")
    p.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_coco)
