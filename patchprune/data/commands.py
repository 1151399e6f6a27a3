"""`patchprune data ...`: generate synthetic data sets, convert ground truth, draw contact sheets."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from patchprune.data.synth import CATEGORY_COLOUR_RULES, CUE_POSITIONS, FOREGROUND_RULES, Difficulty

_DIFFICULTY_FLAGS = {
    "min_objects": int, "max_objects": int, "min_distractors": int, "max_distractors": int, "clutter": int,
    "min_radius": float, "max_radius": float, "max_speed": float, "max_rotation": float, "scale_change": float,
    "pan_speed": float, "enter_leave": float, "cut_prob": float, "noise": float, "bg_contrast": float,
    "foreground": str, "cue_radius": float, "cue_position": str, "texture_scale": float,
    "category_colour": str,
}
_FLAG_CHOICES = {"foreground": FOREGROUND_RULES, "cue_position": CUE_POSITIONS, "category_colour": CATEGORY_COLOUR_RULES}
_FLAG_HELP = {
    "foreground": "appearance: instances are the category (shape, texture) pairs; cue: distractors share the "
                  "categories' shapes and textures and an object is an instance only when its colour matches the "
                  "frame's beacon (a swatch elsewhere in the frame), so foreground needs context",
    "cue_radius": "beacon size with --foreground cue (fraction of the shorter side)",
    "cue_position": "beacon with --foreground cue: corner (solid square, top-left) or random (solid ring)",
    "texture_scale": "multiplies the texture period of instances and distractors (coarser textures)",
    "category_colour": "random: colours independent of the category; fixed: category k in colour k "
                       "(distractors stay random)",
}


def _add_difficulty(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scene difficulty (defaults: patchprune.data.synth.Difficulty)")
    defaults = Difficulty()
    for name, typ in _DIFFICULTY_FLAGS.items():
        help_text = f"{_FLAG_HELP[name]}; " if name in _FLAG_HELP else ""
        g.add_argument("--" + name.replace("_", "-"), type=typ, default=None, choices=_FLAG_CHOICES.get(name),
                       help=f"{help_text}default {getattr(defaults, name)}")


def _difficulty(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in _DIFFICULTY_FLAGS if getattr(args, k) is not None}


def difficulty_from_flags(flags: str) -> dict:
    """The Difficulty keywords of a `data synth-vis` / `synth-refer` flag string (e.g. "--min-objects 2
    --category-colour fixed"), typed and checked as the commands do (SystemExit on a bad flag); lets a
    script regenerate the scenes of a set written with those flags."""
    import shlex

    p = argparse.ArgumentParser(prog="difficulty flags")
    _add_difficulty(p)
    return _difficulty(p.parse_args(shlex.split(flags)))


def _check_generator_options(args: argparse.Namespace, counts: tuple[str, ...]) -> None:
    """Validate a generator's options before anything is generated or written (ValueError naming
    the option): the output folder, counts >= 1, sizes, JPEG quality, scene difficulty."""
    from patchprune.data.synth import Difficulty
    from patchprune.validate import check_int, check_output_folder

    check_output_folder("--out", args.out)
    for name in counts:
        check_int("--" + name.replace("_", "-"), getattr(args, name), 1)
    check_int("--size", args.size, 16)
    if getattr(args, "valid_videos", None) is not None:
        check_int("--valid-videos", args.valid_videos, 0)
        if args.valid_videos > args.videos:
            raise ValueError(f"--valid-videos must be <= --videos ({args.videos}), got {args.valid_videos}")
    if getattr(args, "quality", None) is not None:
        check_int("--quality", args.quality, 1)
        if args.quality > 100:
            raise ValueError(f"--quality must be in 1..100 (JPEG quality), got {args.quality}")
    try:
        Difficulty.from_kwargs(_difficulty(args))
    except ValueError as err:
        raise ValueError(f"scene difficulty: {err}") from None


def _run_synth_vis(args: argparse.Namespace) -> int:
    from patchprune.data.synth_vis import write_synth_vis

    _check_generator_options(args, ("videos", "frames"))
    t0 = time.perf_counter()
    valid = args.valid_videos if args.valid_videos is not None else max(1, args.videos // 5)
    paths = write_synth_vis(args.out, videos=args.videos, valid_videos=valid, frames=args.frames, size=args.size,
                            seed=args.seed, overwrite=args.overwrite, quality=args.quality,
                            progress=not args.no_progress, **_difficulty(args))
    return _report(paths, t0)


def _run_synth_refer(args: argparse.Namespace) -> int:
    from patchprune.data.synth_refer import write_synth_refer
    from patchprune.validate import check_int

    _check_generator_options(args, ("frames",))
    check_int("--images", args.images, 0)
    check_int("--videos", args.videos, 0)
    check_int("--frames", args.frames, 2)
    if args.images + args.videos == 0:
        raise ValueError("--images and --videos are both 0; generate at least one image or video")
    t0 = time.perf_counter()
    paths = write_synth_refer(args.out, images=args.images, videos=args.videos, frames=args.frames,
                              size=args.size, seed=args.seed, overwrite=args.overwrite,
                              progress=not args.no_progress, **_difficulty(args))
    return _report(paths, t0)


def _report(paths: dict, t0: float) -> int:
    """Print what a generator wrote and how long it took; exit status 0."""
    for what, p in paths.items():
        print(f"{what}: {p}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _run_gt_as_pred(args: argparse.Namespace) -> int:
    from patchprune.data.io import write_json
    from patchprune.data.ytvis import gt_as_predictions

    from patchprune.validate import check_number, check_output_file

    check_output_file("OUT", args.out)
    check_number("--score", args.score)
    preds = gt_as_predictions(args.ann, score=args.score)
    write_json(args.out, preds)
    print(f"wrote {len(preds)} predictions to {args.out}")
    return 0


def _run_contact_sheet(args: argparse.Namespace) -> int:
    from patchprune.data.viz import contact_sheet
    from patchprune.data.ytvis import read_ytvis

    from patchprune.validate import check_int, check_output_file

    check_output_file("--out", args.out)
    for name in ("videos", "frames", "tile"):
        check_int("--" + name, getattr(args, name), 1)
    ds = read_ytvis(args.ann)
    n = min(args.videos, len(ds))
    if n == 0:
        raise ValueError(f"{args.ann} has no videos")
    out = contact_sheet([ds[i] for i in range(n)], args.out, frames_per_video=args.frames, tile=args.tile)
    print(f"wrote {out}")
    return 0


def register(groups) -> None:
    """Add `data synth-vis`, `data synth-refer`, `data gt-as-pred` and `data contact-sheet`."""
    p = groups.data.add_parser("synth-vis", help="synthetic video instance segmentation (YouTube-VIS layout)")
    p.add_argument("--out", required=True, type=Path, help="output folder (OUT/train.json, OUT/valid.json, frames)")
    p.add_argument("--videos", type=int, default=50, help="videos in all (train + valid)")
    p.add_argument("--valid-videos", type=int, default=None, help="of which valid (default: videos // 5, >= 1)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--overwrite", action="store_true", help="replace an existing split")
    p.add_argument("--no-progress", action="store_true")
    _add_difficulty(p)
    p.set_defaults(func=_run_synth_vis)

    p = groups.data.add_parser("synth-refer", help="synthetic referring / reasoning segmentation "
                                                   "(RefCOCO-like images, Ref-YouTube-VOS-like videos)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--images", type=int, default=100, help="images in all (train + val)")
    p.add_argument("--videos", type=int, default=20, help="videos in all (train + valid)")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    _add_difficulty(p)
    p.set_defaults(func=_run_synth_refer)

    p = groups.data.add_parser("gt-as-pred", help="turn YouTube-VIS ground truth into a results file (score 1)")
    p.add_argument("ann", type=Path, help="YouTube-VIS annotation JSON")
    p.add_argument("out", type=Path, help="results JSON to write")
    p.add_argument("--score", type=float, default=1.0)
    p.set_defaults(func=_run_gt_as_pred)

    p = groups.data.add_parser("contact-sheet", help="PNG of frames and masks of a YouTube-VIS data set")
    p.add_argument("--ann", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--frames", type=int, default=6, help="frames per video")
    p.add_argument("--tile", type=int, default=160, help="tile width in pixels")
    p.set_defaults(func=_run_contact_sheet)
