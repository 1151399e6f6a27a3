"""Open the demo page in headless Chromium and check that it rendered; save a screenshot.

    python scripts/check_demo_page.py [patchprune_demo/index.html] [--screenshot docs/img/demo_screenshot.png]

Checks: (1) the DOM after load (`--dump-dom`) has `data-images-loaded="N/N"` on <body>, set by the
page's script once every <img> has loaded (N >= 1; a broken image gives k/N with k < N); (2) the
screenshot (`--screenshot`) is not blank: enough distinct colours and contrast. Prints one line;
exit 0 when both hold, 1 otherwise, 2 when Chromium is missing.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAG = re.compile(r'<body[^>]*\bdata-images-loaded="(\d+)/(\d+)"')
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium(explicit: str | None = None) -> str | None:
    """Path of a Chromium / Chrome binary (explicit, else the first on PATH)."""
    if explicit:
        return explicit if Path(explicit).is_file() or shutil.which(explicit) else None
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _chromium(binary: str, profile: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def image_stats(path: Path) -> dict[str, float]:
    """Distinct colours and grey-level standard deviation of a PNG (a blank page has ~1 colour)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(path).convert("RGB"))
    colours = len(np.unique(arr.reshape(-1, 3)[:: max(1, arr.shape[0] * arr.shape[1] // 200_000)], axis=0))
    return {"width": arr.shape[1], "height": arr.shape[0], "colours": colours, "std": float(arr.mean(2).std())}


def check_page(page: str | Path, screenshot: str | Path, window: str = "1300,1500", chromium: str | None = None,
               timeout: float = 120.0, min_colours: int = 200, min_std: float = 20.0) -> dict:
    """Render `page` twice in headless Chromium (DOM dump, screenshot); returns the findings with "ok"."""
    binary = find_chromium(chromium)
    if binary is None:
        raise FileNotFoundError("Chromium not found (apt-get install chromium, or pass --chromium PATH)")
    page = Path(page).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"page {page} not found: run `patchprune demo` first")
    url = page.as_uri()
    screenshot = Path(screenshot).resolve()
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pp-chromium-") as profile:
        dom = _chromium(binary, profile, "--virtual-time-budget=5000", "--dump-dom", url, timeout=timeout).stdout
        tmp = screenshot.with_name(f".{screenshot.name}.tmp.png")
        _chromium(binary, profile, "--virtual-time-budget=5000", f"--screenshot={tmp}", f"--window-size={window}", url,
                  timeout=timeout)
    found = FLAG.search(dom)
    loaded, total = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    result = {"page": str(page), "images_loaded": loaded, "images": total, "screenshot": str(screenshot)}
    if not tmp.is_file():
        return {**result, "ok": False, "why": "Chromium wrote no screenshot"}
    tmp.replace(screenshot)
    stats = image_stats(screenshot)
    result.update(stats)
    problems = []
    if not found:
        problems.append("the page's load flag is missing from the DOM (script did not run)")
    elif total < 1 or loaded != total:
        problems.append(f"{total - loaded} of {total} images did not load")
    if stats["colours"] < min_colours or stats["std"] < min_std:
        problems.append(f"screenshot looks blank ({stats['colours']} colours, contrast {stats['std']:.1f})")
    return {**result, "ok": not problems, "why": "; ".join(problems)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page", nargs="?", default="patchprune_demo/index.html")
    p.add_argument("--screenshot", default="docs/img/demo_screenshot.png")
    p.add_argument("--window-size", default="1300,1500", help="W,H of the browser window (the screenshot's size)")
    p.add_argument("--chromium", default=None, help="browser binary (default: chromium on PATH)")
    args = p.parse_args(argv)
    try:
        r = check_page(args.page, args.screenshot, args.window_size, args.chromium)
    except FileNotFoundError as err:
        print(f"check_demo_page: {err}", file=sys.stderr)
        return 2
    status = "ok" if r["ok"] else f"FAILED: {r['why']}"
    print(f"check_demo_page: {status} | images {r['images_loaded']}/{r['images']} | screenshot {r['screenshot']} "
          f"{r.get('width')}x{r.get('height')}, {r.get('colours')} colours")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
