"""The farthest-first engine's two strategies on a device, timed side by side (issue 10, GPU half).

On CUDA `use_matrix` picks matrix mode (the N x N GEMM on the device, the chain on the host) whenever
the matrix fits, on the argument that a plain step on the device is ~10 dispatched kernels a pick
(`patchprune/select/farthest.py`). This measures it: EVTP, k-center and DivPrune at the in-ViT sites
of `bench speed` (1024 -> 614 tokens, C = 384, batch 1 / 8 / 32) and at the EVTP paper's setting
before an MLLM (4 x 729 tokens, C = 1152, 5 / 20 %), strategy "matrix" against "pool" (plain steps off
the CPU), the picks of both compared. One JSON object; rows ms per call (median), the ratio, same picks.

    python benchmarks/gpu/strategies.py --device cuda > strategies_cuda.json
    python benchmarks/gpu/strategies.py --device cpu --quick          # a dry run anywhere
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from patchprune.metrics.timing import time_side_by_side
from patchprune.select import select
from patchprune.validate import check_device

# (batch, tokens, dim, kept, grid side)
SHAPES = ((1, 1024, 384, 614, 32), (8, 1024, 384, 614, 32), (32, 1024, 384, 614, 32),
          (4, 729, 1152, 146, 27), (4, 729, 1152, 36, 27))
QUICK = ((1, 256, 64, 154, 16), (4, 144, 96, 29, 12))
METHODS = ("evtp", "kcenter", "divprune")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="small shapes (a dry run)")
    args = ap.parse_args(argv)
    try:
        dev = check_device("--device", args.device)
    except ValueError as err:  # one line, as every command's user errors
        print(f"strategies: {err}", file=sys.stderr)
        return 2
    rows = []
    for B, N, C, k, side in QUICK if args.quick else SHAPES:
        x = torch.randn(B, N, C, generator=torch.Generator().manual_seed(N + B)).to(dev)
        for method in METHODS:
            calls = {s: (lambda s=s: select(x, k, method=method, grid=(side, side), strategy=s)) for s in ("matrix", "pool")}
            with torch.inference_mode():
                ms = time_side_by_side(calls, dev, warmup=2, repeats=args.repeats)
                same = bool(torch.equal(calls["matrix"]().index, calls["pool"]().index))
            rows.append({"method": method, "batch": B, "tokens": N, "dim": C, "k": k, "matrix_ms": round(ms["matrix"], 3),
                         "pool_ms": round(ms["pool"], 3), "pool_over_matrix": round(ms["pool"] / ms["matrix"], 2),
                         "same_picks": same})
            print(json.dumps(rows[-1]), file=sys.stderr)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
