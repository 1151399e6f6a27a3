"""The demo page in a real browser (issue 11, item 2): scripts/check_demo_page.py renders a tiny page
written by the demo's own page code in headless Chromium; skipped where Chromium is not installed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from script_loader import ROOT, load_script

from patchprune.demo_page.html import Figure, render_page, write_page
from patchprune.demo_page.pictures import overlay_panel, save_png

check = load_script("scripts/check_demo_page.py")
needs_chromium = pytest.mark.skipif(check.find_chromium() is None, reason="Chromium is not installed")


def _tiny_page(folder: Path, broken: bool = False) -> Path:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    mask = np.zeros((48, 48), bool)
    mask[10:30, 12:36] = True
    save_png(overlay_panel(frame, [(1, "dotted_circle", 0.9, mask)], (160, 160), "tiny"), folder / "a.png")
    figures = [Figure("a.png", "one panel", "a generated frame with one mask")]
    if broken:
        figures.append(Figure("missing.png", "missing", "this file does not exist"))
    page = render_page("tiny", ["intro"], "<table><tr><td>x</td></tr></table>", "note", figures, ["a note"])
    return write_page(folder / "index.html", page)


@needs_chromium
def test_check_demo_page_passes_a_rendered_page_and_saves_the_screenshot(tmp_path):
    page = _tiny_page(tmp_path)
    shot = tmp_path / "shot.png"
    r = check.check_page(page, shot, window="640,480", min_colours=50)
    assert r["ok"], r["why"]
    assert (r["images_loaded"], r["images"]) == (1, 1)
    assert (r["width"], r["height"]) == (640, 480) and shot.is_file()


@needs_chromium
def test_check_demo_page_fails_on_a_missing_image(tmp_path, capsys):
    page = _tiny_page(tmp_path, broken=True)
    assert check.main([str(page), "--screenshot", str(tmp_path / "s.png"), "--window-size", "640,480"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "1 of 2 images did not load" in out


def test_check_demo_page_reports_a_missing_page_or_browser(tmp_path, capsys):
    assert check.main([str(tmp_path / "none.html"), "--screenshot", str(tmp_path / "s.png"),
                       "--chromium", str(tmp_path / "no-browser")]) == 2
    assert "Chromium not found" in capsys.readouterr().err
    if check.find_chromium() is not None:
        assert check.main([str(tmp_path / "none.html"), "--screenshot", str(tmp_path / "s.png")]) == 2
        assert "run `patchprune demo` first" in capsys.readouterr().err


def test_the_committed_screenshot_is_not_blank():
    stats = check.image_stats(ROOT / "docs" / "img" / "demo_screenshot.png")
    assert stats["colours"] > 300 and stats["std"] > 20  # GIF frames are 256-colour each
