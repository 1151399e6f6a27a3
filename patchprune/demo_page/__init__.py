"""The pictures, table and HTML page of `patchprune demo` (the models run in `patchprune.demo`).

`pictures`: overlay panels with track ids, kept-patch tiles per pruning stage, animated GIFs, film
strips and the keep-ratio-per-layer plot. `table`: the AP / PKR / GMACs / FPS / speed-up table for
the terminal and the page. `html`: the self-contained page (images beside it) with a load flag
that `scripts/check_demo_page.py` reads in headless Chromium.
"""
