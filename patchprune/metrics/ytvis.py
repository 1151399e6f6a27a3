"""YouTube-VIS AP / AR with spatio-temporal IoU, on the regular pycocotools.

Mirrors the official YouTube-VIS evaluator (the youtubevos fork of pycocotools, `ytvoseval.py`):
IoU of a predicted track D and a ground-truth track G = sum_t |D_t ∩ G_t| / sum_t |D_t ∪ G_t|, where a
frame on which only one side has a mask adds its area to the union only (0 when the union is empty).
Crowd ground truth (iscrowd = 1) gets the same plain IoU; as in COCOeval it is an ignored region:
a detection matched to it counts as neither true nor false positive, and several detections may
match it. Matching, precision / recall accumulation and the 101-point interpolation are pycocotools'
COCOeval (per video instead of per image); only the IoU and the area are replaced.
Area ranges use a track's mean area over the frames where it is present (small < 128², medium
< 256², large), maxDets 1/10/100. The ground-truth area comes from the annotation's per-frame
`areas` list when the file has one (as the official evaluator reads it: entries that are null or
0 are skipped), otherwise from the masks; a prediction's area always comes from its masks.

Why not the youtubevos fork of pycocotools: it replaces the installed pycocotools and uses numpy
aliases that no longer exist.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from patchprune.data import rle as rle_utils
from patchprune.data.io import read_json
from patchprune.metrics.ytvis_input import check_ytvis_inputs

YTVIS_AREA_RANGES: list[list[float]] = [[0.0, 1e5 ** 2], [0.0, 128.0 ** 2], [128.0 ** 2, 256.0 ** 2], [256.0 ** 2, 1e5 ** 2]]


def _track_rles(segs: Sequence[Any], height: int, width: int) -> list[dict[str, Any] | None]:
    """pycocotools RLEs per frame; None (or an empty mask) means absent."""
    out: list[dict[str, Any] | None] = []
    for s in segs:
        if s is None:
            out.append(None)
            continue
        r = rle_utils.to_rle(s, height, width)
        out.append(r if mask_utils.area(r) > 0 else None)
    return out


def track_areas(rles: Sequence[dict[str, Any] | None]) -> np.ndarray:
    """float64 [T] pixel areas of a track (0 where absent)."""
    return np.array([float(mask_utils.area(r)) if r is not None else 0.0 for r in rles], dtype=np.float64)


def mean_present_area(areas: Sequence[float | None]) -> float:
    """Mean of a track's per-frame areas over the frames where it is present (null / 0 skipped); 0 if never.

    This is the official evaluator's `avg_area`, which decides a track's area range.
    """
    present = [float(a) for a in areas if a]
    return float(np.mean(present)) if present else 0.0


def gt_track_area(ann: dict[str, Any], rles: Sequence[dict[str, Any] | None], what: str) -> float:
    """Area-range area of a ground-truth track: from the file's `areas` when given, else from its masks."""
    areas = ann.get("areas")
    if areas is None:
        return mean_present_area(track_areas(rles))
    if not isinstance(areas, list) or len(areas) != len(rles):
        raise ValueError(f"{what}: 'areas' must be a list with one entry (number or null) per frame "
                         f"({len(rles)}); fix the file or drop 'areas' to use the mask areas")
    for a in areas:
        if a is not None and (isinstance(a, bool) or not isinstance(a, (int, float)) or not np.isfinite(a) or a < 0):
            raise ValueError(f"{what}: 'areas' entries must be non-negative numbers or null, got {a!r}")
    return mean_present_area(areas)


def spatiotemporal_iou(dts: Sequence[Sequence[dict | None]], gts: Sequence[Sequence[dict | None]]) -> np.ndarray:
    """float64 [D, G] spatio-temporal IoU between predicted and ground-truth tracks (pycocotools RLEs).

    All tracks must have the same number of frames. Pairs whose union is empty get IoU 0. Crowd
    ground truth gets this same IoU (as in the official evaluator; COCO's |D ∩ G| / |D| is not used).
    """
    D, G = len(dts), len(gts)
    if D == 0 or G == 0:
        return np.zeros((D, G), dtype=np.float64)
    T = len(gts[0])
    if any(len(x) != T for x in list(dts) + list(gts)):
        raise ValueError("all tracks must have the same number of frames")
    inter = np.zeros((D, G), dtype=np.float64)
    area_d = np.stack([track_areas(d) for d in dts])  # [D, T]
    area_g = np.stack([track_areas(g) for g in gts])  # [G, T]
    for t in range(T):
        di = [i for i in range(D) if dts[i][t] is not None]
        gi = [j for j in range(G) if gts[j][t] is not None]
        if not di or not gi:
            continue
        # pycocotools gives the per-frame IoU; recover the intersection from it: I = IoU (|D| + |G|) / (1 + IoU).
        iou = np.asarray(mask_utils.iou([dts[i][t] for i in di], [gts[j][t] for j in gi],
                                        [0] * len(gi)), dtype=np.float64).reshape(len(di), len(gi))
        ad, ag = area_d[di, t][:, None], area_g[gi, t][None, :]
        inter[np.ix_(di, gi)] += np.rint(iou * (ad + ag) / (1.0 + iou))
    union = area_d.sum(1)[:, None] + area_g.sum(1)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


class _VideoCOCOeval(COCOeval):
    """COCOeval over videos ("images" are videos) whose IoU is the spatio-temporal track IoU."""

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools naming)
        p = self.params
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        return spatiotemporal_iou([d["rles"] for d in dt], [g["rles"] for g in gt])


def _quiet_coco(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _load(obj: Any, what: str) -> Any:
    return read_json(obj, what) if isinstance(obj, (str, Path)) else obj


def ytvis_eval(gt: str | Path | dict[str, Any], results: str | Path | list[dict[str, Any]],
               area_ranges: list[list[float]] | None = None) -> dict[str, float]:
    """YouTube-VIS metrics of a results list against a ground-truth annotation file.

    gt: path or dict in the YouTube-VIS layout. results: path or list of
    {video_id, category_id, segmentations: [RLE or null per frame], score}.
    Returns AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl in [0, 1] (the official
    evaluator's 12 numbers); a metric with no ground truth in its area range is -1 (the COCO convention).
    area_ranges: [all, small, medium, large] as [lo, hi] pixel areas (default the YouTube-VIS ranges).
    """
    gt = _load(gt, "YouTube-VIS annotation file")
    results = _load(results, "results file")
    check_ytvis_inputs(gt, results)  # every entry validated before anything is scored
    if not isinstance(gt, dict) or not isinstance(gt.get("videos"), list) or not isinstance(gt.get("categories"), list):
        raise ValueError("ground truth must be a YouTube-VIS dict with 'videos' and 'categories'")
    if not isinstance(results, list):
        raise ValueError("results must be a JSON list of {video_id, category_id, segmentations, score}")
    videos = {int(v["id"]): v for v in gt["videos"]}

    def size(vid: int) -> tuple[int, int, int]:
        v = videos[vid]
        return int(v["height"]), int(v["width"]), len(v["file_names"]) if "file_names" in v else int(v["length"])

    gt_anns = []
    for k, a in enumerate(gt.get("annotations") or [], start=1):
        vid = int(a["video_id"])
        if vid not in videos:
            raise ValueError(f"ground-truth annotation {a.get('id')} refers to unknown video {vid}")
        H, W, T = size(vid)
        if len(a["segmentations"]) != T:
            raise ValueError(f"ground-truth annotation {a.get('id')}: {len(a['segmentations'])} frames, video has {T}")
        rles = _track_rles(a["segmentations"], H, W)
        gt_anns.append({"id": k, "image_id": vid, "category_id": int(a["category_id"]),
                        "iscrowd": int(a.get("iscrowd", 0)), "rles": rles,
                        "area": gt_track_area(a, rles, f"ground-truth annotation {a.get('id')}")})
    dt_anns = []
    for k, r in enumerate(results, start=1):
        if not isinstance(r, dict) or not all(key in r for key in ("video_id", "category_id", "segmentations", "score")):
            raise ValueError(f"result {k - 1} lacks one of video_id / category_id / segmentations / score")
        vid = int(r["video_id"])
        if vid not in videos:
            raise ValueError(f"result {k - 1} refers to video {vid}, which is not in the ground truth")
        H, W, T = size(vid)
        if len(r["segmentations"]) != T:
            raise ValueError(f"result {k - 1}: {len(r['segmentations'])} segmentations for a video of {T} frames")
        score = float(r["score"])
        if not np.isfinite(score):
            raise ValueError(f"result {k - 1} has a non-finite score")
        rles = _track_rles(r["segmentations"], H, W)
        dt_anns.append({"id": k, "image_id": vid, "category_id": int(r["category_id"]), "iscrowd": 0,
                        "score": score, "rles": rles, "area": mean_present_area(track_areas(rles))})

    images = [{"id": vid} for vid in videos]
    cats = [{"id": int(c["id"]), "name": c.get("name", str(c["id"]))} for c in gt["categories"]]
    coco_gt = _quiet_coco({"images": images, "categories": cats, "annotations": gt_anns})
    coco_dt = _quiet_coco({"images": images, "categories": cats, "annotations": dt_anns})
    ev = _VideoCOCOeval(coco_gt, coco_dt, iouType="bbox")  # "bbox": no mask conversion in _prepare
    if area_ranges is not None and (len(area_ranges) != 4 or any(len(r) != 2 or r[0] > r[1] for r in area_ranges)):
        raise ValueError("area_ranges must be 4 [lo, hi] pairs (all, small, medium, large), e.g. YTVIS_AREA_RANGES")
    ev.params.areaRng = area_ranges or YTVIS_AREA_RANGES
    ev.params.areaRngLbl = ["all", "small", "medium", "large"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return summarize(ev)


def summarize(ev: COCOeval) -> dict[str, float]:
    """The standard 12 COCO summary numbers from an accumulated COCOeval, without printing."""
    p = ev.params
    prec, rec = ev.eval["precision"], ev.eval["recall"]  # [T,R,K,A,M], [T,K,A,M]

    def mean(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(x.mean()) if x.size else -1.0

    def t_index(thr: float) -> int:
        return int(np.argmin(np.abs(p.iouThrs - thr)))

    m_last = len(p.maxDets) - 1
    out = {
        "AP": mean(prec[:, :, :, 0, m_last]),
        "AP50": mean(prec[t_index(0.5), :, :, 0, m_last]),
        "AP75": mean(prec[t_index(0.75), :, :, 0, m_last]),
        "APs": mean(prec[:, :, :, 1, m_last]),
        "APm": mean(prec[:, :, :, 2, m_last]),
        "APl": mean(prec[:, :, :, 3, m_last]),
    }
    for m, md in enumerate(p.maxDets):
        out[f"AR{md}"] = mean(rec[:, :, 0, m])
    # AR per area range at the largest maxDets, as COCOeval.summarize reports them.
    out["ARs"] = mean(rec[:, :, 1, m_last])
    out["ARm"] = mean(rec[:, :, 2, m_last])
    out["ARl"] = mean(rec[:, :, 3, m_last])
    return out
