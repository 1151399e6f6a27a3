"""Side-by-side timing: medians, the steady host allocator and the page faults it removes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from patchprune.metrics.timing import minor_faults, quartiles, round_ratios, steady_allocator, time_side_by_side

# A ViT-S/16 forward's activations at 512 px (qkv, attention output, projection, MLP hidden, GELU):
# blocks of 1.5-6.3 MB allocated and freed in a block's order, written like real outputs.
BLOCK_LIKE = """
import json, sys, torch
from patchprune.metrics.timing import time_side_by_side
def forward_like():
    kept = None
    for _ in range(12):
        qkv = torch.ones(1025, 1152); attn = torch.ones(1025, 384); del qkv
        proj = torch.ones(1025, 384); del attn
        hidden = torch.ones(1025, 1536); act = torch.ones(1025, 1536); del hidden
        out = torch.ones(1025, 384); del act, proj
        kept = out
    torch.ones(8 * 1025, 1536)  # a batch-8 MLP activation (50 MB): above any mmap threshold
t = time_side_by_side({"f": forward_like}, torch.device("cpu"), warmup=8, repeats=3, allocator=sys.argv[1])  # large blocks settle in a few calls
print(json.dumps({"allocator": t.allocator, "faults": t.faults["f"]}))
"""


def run_fresh(allocator: str) -> dict:
    """The block-like forward timed in a fresh process (a fresh allocator state)."""
    out = subprocess.run([sys.executable, "-c", BLOCK_LIKE, allocator], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_timings_are_medians_with_faults_per_call():
    calls = {"a": 0}

    def work():
        calls["a"] += 1
        torch.ones(64, 64).sum()

    t = time_side_by_side({"a": work, "b": lambda: None}, torch.device("cpu"), warmup=1, repeats=4)
    assert calls["a"] == 5 and set(t) == {"a", "b"} and all(v >= 0 for v in t.values())
    assert t.allocator in ("steady", "system") and set(t.faults) == {"a", "b"}
    if minor_faults() is not None:
        assert all(f >= 0 for f in t.faults.values())
    with pytest.raises(ValueError, match="allocator"):
        time_side_by_side({"a": work}, torch.device("cpu"), allocator="jemalloc")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and page-fault counts")
def test_steady_allocator_leaves_no_page_faults_to_the_timed_calls():
    if not steady_allocator():
        pytest.skip("no glibc mallopt in this process")
    # each call writes 12 x 21.8 MB + 50 MB of fresh tensors (about 76,000 pages). Under glibc's
    # adaptive thresholds a fresh process faults 0-22,000 of the small blocks' pages in again per call,
    # depending on where the kernel placed its heap (12,940 / 21,685 / 0 measured in three processes),
    # and always the 50 MB block's 12,300: it is above the largest mmap threshold, mapped per call.
    pages_written = (12 * 1025 * (1152 + 3 * 384 + 2 * 1536) + 8 * 1025 * 1536) * 4 // 4096
    for _ in range(2):  # fresh processes: the result does not hinge on one address-space layout
        steady = run_fresh("steady")
        assert steady["allocator"] == "steady"
        assert steady["faults"] < 0.01 * pages_written
    system = run_fresh("system")
    assert system["allocator"] == "system"
    assert system["faults"] > 0.9 * 8 * 1025 * 1536 * 4 / 4096


def test_round_ratios_pair_the_calls_of_each_round_and_quartiles_bracket_the_median():
    clock = {"t": 0.0}
    costs = {"dense": [10.0, 30.0, 10.0, 12.0], "fast": [5.0, 15.0, 5.0, 4.0]}  # round 2: a slow stretch
    calls = {"dense": 0, "fast": 0}

    def fake_clock():
        return clock["t"]

    def make(name):
        def fn():
            clock["t"] += costs[name][calls[name]] / 1e3
            calls[name] += 1
        return fn

    import patchprune.metrics.timing as timing

    saved = timing.CLOCKS["wall"]
    timing.CLOCKS["wall"] = fake_clock
    try:
        t = time_side_by_side({"dense": make("dense"), "fast": make("fast")}, torch.device("cpu"), warmup=0, repeats=4)
    finally:
        timing.CLOCKS["wall"] = saved
    ratios = round_ratios(t, "dense", "fast")
    assert ratios == pytest.approx([2.0, 2.0, 2.0, 3.0])  # the slow round keeps its ratio
    q1, q2, q3 = quartiles(ratios)
    assert q1 <= q2 <= q3 and q2 == pytest.approx(2.0) and q3 == pytest.approx(2.25)
    assert quartiles([1.5]) == (1.5, 1.5, 1.5)
