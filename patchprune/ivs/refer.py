"""`patchprune refer INPUT --run RUN --text "..." --out DIR`: instructed segmentation of a user's image
or video with a trained IVS run, optionally with only a share of the visual tokens reaching the
language model (`--method evtp --ratio 0.1`: the selection `eval ivs` measures).

INPUT: an image (jpg / png / bmp), a video file (mp4 / avi / mkv / mov / webm) or a folder of frames.
Every frame is a key frame; a video's key frame gets its neighbours as reference frames, as in `eval
ivs`. Output in DIR: `overlay.png` (an image) or `overlay.mp4` (a video): the mask over the input,
labelled with the instruction and its score; `masks/<frame>.png`: the binary masks at the input's size;
`kept/<frame>.png` (when pruned): the visual tokens that reached the language model; `result.json`:
per frame the score, RLE mask, box, kept tokens and their coverage radius.

Device (`device`, `refer --device`): the CPU by default; on CUDA the model and its batches go there and
each batch's masks, scores and kept positions come back to the CPU for the files.

The run knows the words of its training data only (word-level tokenizer): an instruction with other
words is refused with the words named, rather than segmented from [UNK] tokens.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DISPLAY_SIDE = 320  # longer side of a kept-tokens picture


def instruction_words(tok: Any, text: str) -> list[str]:
    """The words the run's tokenizer splits `text` into (lower-cased, punctuation apart)."""
    return [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))]


def check_instruction(tok: Any, text: str) -> None:
    """ValueError when `text` has no words or words the run never saw (they would all be [UNK])."""
    words = instruction_words(tok, text)
    if not words:
        raise ValueError("--text is empty; give the instruction, e.g. --text 'the red circle'")
    vocab = tok.get_vocab()
    unknown = [w for w in words if w not in vocab]
    if unknown:
        known = sorted(w for w in vocab if not w.startswith(("[", "<")) and w.isalpha())
        raise ValueError(f"--text: the run's vocabulary lacks {', '.join(repr(w) for w in unknown)}; it knows the "
                         f"{len(known)} words of its training data, e.g. {', '.join(known[:16])}")


def is_image(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def iter_input(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] frames of an image, a video file or a folder of frames (clear errors otherwise)."""
    from patchprune.data.images import read_image
    from patchprune.vis.segment import iter_frames

    if is_image(path):
        yield read_image(path)
        return
    yield from iter_frames(path, max_frames)


def small_frames(path: str | Path, side: int, max_frames: int | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Every frame at the model's side (uint8 [T, side, side, 3]) and the input's (H, W); one frame at a
    time is decoded at full size, so a long video costs only its small copies."""
    from patchprune.vis.data import resize_frames

    small, size = [], None
    for frame in iter_input(path, max_frames):  # one size throughout (iter_frames checks)
        size = size or frame.shape[:2]
        small.append(resize_frames(frame[None], side)[0])
    if size is None:
        raise ValueError(f"{path}: no frames")
    return torch.stack(small), size


def refer_segment(source: str | Path, run: str | Path, text: str, out: str | Path, method: str = "dense",
                  ratio: float = 1.0, max_frames: int | None = None, batch: int = 8, fps: float = 10.0,
                  threads: int | None = None, progress: bool = True, seed: int = 0,
                  options: dict[str, Any] | None = None, device: str | torch.device | None = None) -> dict[str, Any]:
    """Segment what `text` refers to in every frame of `source`; writes the files of the module
    docstring and returns a summary (frames, mean score, kept tokens per frame, output folder).
    device: where the model runs (None / "cpu", the default; "cuda", "cuda:N", "auto" or a torch.device)."""
    from PIL import Image
    from tqdm import tqdm

    from patchprune.data import rle as rle_utils
    from patchprune.data.io import write_json
    from patchprune.demo_page.pictures import display_size, draw_tracks, keep_tile, save_png
    from patchprune.ivs.data import ReferItem, make_batch
    from patchprune.ivs.evaluate import COVERAGE_SPACE, VIDEO_EMPTY_BELOW, check_eval_args
    from patchprune.ivs.run import load_run
    from patchprune.select.coverage import coverage_radius
    from patchprune.train.distributed import run_device
    from patchprune.validate import check_int, check_threads

    check_eval_args(method, ratio)
    check_int("batch", batch, 1)
    check_threads("threads", threads)
    dev = run_device(device)
    if threads:
        torch.set_num_threads(threads)
    model, tok, config, step = load_run(run, device=dev)
    check_instruction(tok, text)
    S = config.img_size
    frames, (H, W) = small_frames(source, S, max_frames)
    T = frames.shape[0]
    video = T > 1 or not is_image(source)
    out = Path(out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    pruned = method != "dense" and ratio < 1.0
    if pruned:
        (out / "kept").mkdir(exist_ok=True)
    options = {**({"seed": seed} if method == "random" else {}), **(options or {})}
    item = ReferItem(frames, torch.zeros(T, S, S, dtype=torch.bool), text, "input", 0)
    torch.manual_seed(seed)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=T, desc="refer", unit="frame", disable=not progress)
    with torch.inference_mode():
        for s in range(0, T, batch):
            keys = list(range(s, min(T, s + batch)))
            b, _, _ = make_batch([item] * len(keys), keys, tok, config.ref_frames)
            res = model(b.to(dev), method=method, ratio=ratio, **options)
            masks, scores = (t.cpu() for t in res.predict((H, W), VIDEO_EMPTY_BELOW if video else 0.0))
            radii = coverage_radius(res.vision.float(), res.kept_index, COVERAGE_SPACE, config.grid).tolist() \
                if pruned else [0.0] * len(keys)
            kept_index = res.kept_index.cpu()
            for j, t in enumerate(keys):
                m = masks[j].numpy()
                Image.fromarray(m.astype(np.uint8) * 255).save(out / "masks" / f"{t:05d}.png")
                if pruned:
                    keep = np.zeros(config.grid[0] * config.grid[1], dtype=bool)
                    keep[kept_index[j].numpy()] = True
                    save_png(keep_tile(frames[t].numpy(), keep, config.grid, display_size(H, W, DISPLAY_SIDE),
                                       f"frame {t + 1}: {res.kept_tokens} of {keep.size} tokens"),
                             out / "kept" / f"{t:05d}.png")
                rows.append({"frame": t, "score": float(scores[j]), "segmentation": rle_utils.encode(m),
                             "bbox": rle_utils.bbox(m), "area": int(m.sum()),
                             "kept_tokens": int(res.kept_tokens), "coverage_radius": float(radii[j])})
            bar.update(len(keys))
    bar.close()
    label = text if len(text) <= 40 else text[:37] + "..."

    def drawn(frame: np.ndarray, row: dict[str, Any]) -> np.ndarray:
        m = rle_utils.decode(row["segmentation"], H, W)
        return draw_tracks(frame, [(1, label, row["score"], m)] if m.any() else [])

    if video:
        from patchprune.data.video import VideoWriter

        with VideoWriter(out / "overlay.mp4", fps=fps) as writer:
            for frame, row in zip(iter_input(source, max_frames), rows):
                writer.write(drawn(frame, row)[: H - H % 2, : W - W % 2])
    else:
        save_png(drawn(next(iter_input(source)), rows[0]), out / "overlay.png")
    result = {"input": str(source), "run": str(run), "step": step, "text": text, "words": instruction_words(tok, text),
              "method": method, "ratio": float(ratio), "tokens_per_frame": config.grid[0] * config.grid[1],
              "height": H, "width": W, "frames": rows}
    write_json(out / "result.json", result)
    return {"frames": T, "out": str(out), "mean_score": float(np.mean([r["score"] for r in rows])),
            "kept_tokens_per_frame": rows[0]["kept_tokens"], "overlay": str(out / ("overlay.mp4" if video else "overlay.png"))}


__all__ = ["refer_segment", "check_instruction", "instruction_words"]
