"""`patchprune demo` (issue 11, item 2): the page, the pictures and the table on tiny settings, a
user's video, bad input; the pieces of the page."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from patchprune.cli import main
from patchprune.demo_page.pictures import stage_blocks, stage_label
from patchprune.demo_page.table import text_table

FIGURES = ("overlay.gif", "kept.gif", "keep_ratio.png", "overlay_strip.png", "kept_strip.png")


def test_demo_writes_the_page_pictures_and_the_table(tmp_path, capsys):
    out = tmp_path / "page"
    code = main(["demo", "--out", str(out), "--frames", "3", "--videos", "1", "--timing-frames", "1",
                 "--threads", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].split()[:4] == ["model", "AP", "AP50", "PKR"]
    assert [line.split()[0] for line in lines[2:5]] == ["dense", "VPP", "VPP"]
    assert "1 torch thread(s)" in printed and f"page: {out / 'index.html'}" in printed
    result = json.loads((out / "demo.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["dense", "VPP 0.55", "VPP 0.40"]
    assert rows["dense"]["pkr"] == 1.0
    assert rows["VPP 0.40"]["pkr"] < rows["VPP 0.55"]["pkr"] < 1.0
    assert rows["VPP 0.40"]["gmacs"]["backbone"] < rows["dense"]["gmacs"]["backbone"]
    for r in rows.values():
        assert 0.0 <= r["AP"] <= 1.0 and r["fps"]["model"] > 0
    assert len(result["keep_ratio_per_block"]["vpp-0.40"]) == 12
    page = (out / "index.html").read_text()
    for name in FIGURES:
        assert (out / name).stat().st_size > 0 and f'src="{name}"' in page
    assert '<table id="results">' in page and "VPP 0.40" in page and "data-images-loaded" in page
    with Image.open(out / "overlay.gif") as gif:
        assert gif.n_frames == 3
        # ground truth | dense | VPP 0.55 | VPP 0.40, each at least 200 px wide
        assert gif.size[0] >= 4 * 200
    with Image.open(out / "kept.gif") as gif:
        assert gif.n_frames == 3
    # the demo's generated videos and their ground truth are beside the page
    assert len(json.loads((out / "data" / "demo.json").read_text())["videos"]) == 1


def test_demo_runs_on_a_users_mp4_without_ap(tmp_path, capsys):
    from patchprune.data.synth import generate_video
    from patchprune.data.video import write_video

    frames = generate_video(5, frames=4, size=(72, 112)).frames  # not square, not the model's size
    video = write_video(tmp_path / "clip.mp4", frames, fps=5)
    out = tmp_path / "page"
    assert main(["demo", "--video", str(video), "--out", str(out), "--frames", "3", "--timing-frames", "1",
                 "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    dense = next(line for line in printed.splitlines() if line.startswith("dense"))
    assert dense.split()[1:3] == ["-", "-"]  # no ground truth, no AP
    page = (out / "index.html").read_text()
    assert "no ground truth" in page and "clip.mp4 (112x72)" in page
    assert not (out / "data").exists()
    with Image.open(out / "overlay.gif") as gif:
        assert gif.n_frames == 3


def test_video_source_reads_a_folder_of_frames_at_model_size(tmp_path):
    from patchprune.demo import video_source

    rng = np.random.default_rng(0)
    for t in range(3):
        Image.fromarray(rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)).save(tmp_path / f"{t:03d}.png")
    src = video_source(tmp_path, frames=5, side=96)
    assert src.gt is None and len(src.frames) == 3
    assert tuple(src.clips[0].frames.shape) == (3, 96, 96, 3)
    assert (src.clips[0].height, src.clips[0].width) == (50, 80)


@pytest.mark.parametrize("case", ["missing", "corrupt", "suffix", "frames", "threshold", "empty-folder"])
def test_demo_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    args = ["demo", "--out", str(tmp_path / "o"), "--no-progress"]
    if case == "missing":
        args += ["--video", str(tmp_path / "nope.mp4")]
    elif case == "corrupt":
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"\x00not a video" * 50)
        args += ["--video", str(bad)]
    elif case == "suffix":
        txt = tmp_path / "notes.txt"
        txt.write_text("hello")
        args += ["--video", str(txt)]
    elif case == "frames":
        args += ["--frames", "0"]
    elif case == "threshold":
        args += ["--threshold", "1.5"]
    else:
        (tmp_path / "empty").mkdir()
        args += ["--video", str(tmp_path / "empty")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("patchprune: error:") and "\n" not in err
    word = {"missing": "not found", "corrupt": "corrupt", "suffix": "unsupported", "frames": "--frames",
            "threshold": "--threshold", "empty-folder": "no frames"}[case]
    assert word in err


def test_stage_blocks_and_labels_follow_the_keep_ratios():
    ratios = [1.0, 0.65, 0.65, 0.4, 0.4, 0.4, 0.21, 0.21, 0.21, 0.13, 0.13, 0.13]
    starts = stage_blocks(ratios)
    assert starts == [0, 1, 3, 6, 9]
    assert [stage_label(b, starts, 12) for b in starts] == ["block 0", "blocks 1-2", "blocks 3-5", "blocks 6-8",
                                                            "blocks 9-11"]
    assert stage_blocks([1.0] * 12) == [0]


def test_table_speed_ups_are_fps_ratios_against_the_first_row():
    rows = [{"model": "dense", "AP": 0.25, "AP50": 0.5, "pkr": 1.0, "gmacs": {"backbone": 0.4, "total": 0.5},
             "fps": {"backbone": 10.0, "model": 8.0}},
            {"model": "VPP 0.40", "AP": None, "AP50": None, "pkr": 0.38, "gmacs": {"backbone": 0.15, "total": 0.25},
             "fps": {"backbone": 25.0, "model": 12.0}}]
    text = text_table(rows).splitlines()
    assert text[2].split() == ["dense", "25.0", "50.0", "1.00", "0.400", "0.500", "10.0", "8.0", "1.00x", "1.00x"]
    assert text[3].split() == ["VPP", "0.40", "-", "-", "0.38", "0.150", "0.250", "25.0", "12.0", "2.50x", "1.50x"]
