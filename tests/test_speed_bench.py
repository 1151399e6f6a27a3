"""`patchprune bench speed --methods` (issue 10): every in-ViT method in one side-by-side table."""
import json

import pytest
import torch

from patchprune.bench.speed import (CEILING_TRUST, efficiency_checks, format_methods_table, method_catalogue,
                                    resolve_methods, run_methods_bench, timing_warnings)
from patchprune.cli import main as cli_main

TINY = dict(model="vit_tiny_patch16_224", img_size=64, warmup=0, repeats=1, device="cpu", threads=1)


def test_catalogue_lists_every_in_vit_method_from_the_registries():
    cat = method_catalogue()
    issue_table = {"random", "tome", "evtp", "kcenter", "divprune", "visionzip", "attention", "vispruner"}
    assert issue_table <= {m for m, kind in cat.items() if kind == "policy"}
    # (other tests may register more methods: a superset)
    assert {m for m, kind in cat.items() if kind == "learned"} >= {"vpp", "svit", "dynamicvit", "tps", "evit"}
    assert cat["tome-block"] == "tome-block"
    assert not {"keep-all", "select", "vpp-sm", "vpp-mapsm"} & set(cat)
    assert resolve_methods("all") == list(cat)
    assert resolve_methods("evtp, random,evtp") == ["evtp", "random"]
    with pytest.raises(ValueError, match="available: all"):
        resolve_methods("evtp,nosuch")


def test_one_table_dense_timed_once_per_batch():
    res = run_methods_bench("random,evtp,vpp,tome-block", batches=(1, 2), **TINY)
    rows = res["rows"]
    assert [(r["method"], r["batch"]) for r in rows] == [(m, b) for b in (1, 2)
                                                         for m in ("random", "evtp", "vpp", "tome-block")]
    for b in (1, 2):
        assert len({r["dense_ms"] for r in rows if r["batch"] == b}) == 1  # one dense timing per batch
    for r in rows:
        assert r["flops_ratio"] > 1.0 and 0.0 < r["pkr"] < 1.0
        # rows hold 4 decimals: a tiny speed-up (a loaded machine) loses relative precision
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["flops_ratio"], rel=1e-3, abs=2e-4)
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["pruned_ms"], rel=1e-2)
    by = {(r["method"], r["batch"]): r for r in rows}
    assert by[("random", 1)]["pkr"] == by[("evtp", 1)]["pkr"]  # same schedule, same counts
    assert by[("evtp", 1)]["flops_ratio"] < by[("random", 1)]["flops_ratio"]  # selection MACs are counted
    assert set(res["checks"]) == {f'{r["method"]} b{r["batch"]} fp32 >= {0.95 if r["batch"] == 1 else 0.9}'
                                  for r in rows}
    table = format_methods_table(res)
    assert "| tome-block | 2 | fp32 |" in table and "efficiency bars" in table and "of ceiling" in table
    for r in rows:  # the ceiling: timm's blocks at the same counts, timed in the same run
        assert r["ceiling_ms"] > 0 and r["of_ceiling"] == pytest.approx(r["ceiling_ms"] / r["pruned_ms"], rel=1e-2)
    assert by[("random", 1)]["ceiling_ms"] == by[("evtp", 1)]["ceiling_ms"]  # one schedule, timed once


def test_ceiling_is_timms_blocks_at_the_schedules_token_counts():
    from patchprune.bench.speed import build_vit, schedule_counts, sliced_blocks
    from patchprune.metrics.flops import flops_with_output, vit_macs

    vit = build_vit("vit_tiny_patch16_224", 64, torch.device("cpu"))
    x = torch.randn(2, 3, 64, 64)
    counts = [16, 16, 9, 9, 9, 5, 5, 5, 5, 3, 3, 3]
    with torch.no_grad():
        out = sliced_blocks(vit, x, counts)
        assert out.shape == (2, 1 + 16, vit.embed_dim)  # the full token set, normed
        rising = sliced_blocks(vit, x, [4, 4, 2, 9, 16, 16, 16, 16, 16, 16, 16, 16])  # SViT-like: counts rise again
        assert not torch.allclose(rising[:, 1 + 9:1 + 16], sliced_blocks(vit, x, [4, 4, 2, 9] + [0] * 8)[:, 1 + 9:])
        assert torch.allclose(sliced_blocks(vit, x, [16] * 12), vit.forward_features(x), atol=1e-5)  # no slice: dense
        macs = flops_with_output(lambda: sliced_blocks(vit, x, counts), ())[0].macs
    assert macs < flops_with_output(vit.forward_features, x)[0].macs
    assert macs == pytest.approx(2 * vit_macs(vit, (4, 4), counts), rel=0.05)  # counted as the runner's blocks
    assert flops_with_output(lambda: sliced_blocks(vit, x, [4, 2, 9] + [16] * 9), ())[0].macs > macs
    assert schedule_counts([614.0, 491.4, 0.2]) == (614, 491, 1)


def test_a_method_the_model_cannot_run_is_a_row_with_its_reason():
    res = run_methods_bench("evit,random", batches=(1,), **{**TINY, "model": "vit_base_patch16_gap_224", "img_size": 32})
    evit, random = res["rows"]
    assert "CLS token" in evit["error"] and "efficiency" not in evit  # no CLS: EViT cannot run
    assert "error" not in random and random["efficiency"] > 0
    assert "not run: " in format_methods_table(res)
    assert list(res["checks"]) == ["random b1 fp32 >= 0.95"]
    assert efficiency_checks([{"method": "x", "batch": 8, "dtype": "fp32", "efficiency": 0.91}]) == {"x b8 fp32 >= 0.9": True}


def test_a_ceiling_above_the_flop_ratio_flags_the_run_as_disturbed():
    """A ceiling efficiency above CEILING_TRUST means dense ran slower than timm's own blocks allow:
    the warning names the batch and dtype, and the table prints it under the bars."""
    rows = [{"method": m, "batch": b, "dtype": "fp32", "ceiling_efficiency": c}
            for m, b, c in [("a", 1, 0.93), ("b", 1, 0.97), ("a", 8, 0.99), ("b", 8, CEILING_TRUST + 0.07),
                            ("c", 8, 1.06)]]
    rows.append({"method": "d", "batch": 8, "dtype": "fp32", "error": "cannot run"})  # rows without timing are skipped
    warnings = timing_warnings(rows)
    assert len(warnings) == 1 and warnings[0].startswith("batch 8 fp32: ceiling efficiency up to 1.09")
    assert "2 row(s)" in warnings[0] and timing_warnings(rows[:3]) == []
    res = {"model": "m", "img_size": 64, "keep": "1:0.5", "learned_target": 0.5, "tome_block_r": 4, "device": "cpu",
           "threads": 1, "repeats": 1, "rows": [], "checks": {}, "warnings": warnings}
    assert "WARNING: batch 8 fp32" in format_methods_table(res)


def test_cli_json(capsys):
    code = cli_main(["bench", "speed", "--methods", "random,kcenter", "--batches", "1", "--model", "vit_tiny_patch16_224",
                     "--img-size", "64", "--repeats", "1", "--warmup", "0", "--threads", "1", "--device", "cpu", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in res["rows"]] == ["random", "kcenter"] and res["threads"] == 1
    assert res["allocator"] in ("steady", "system")  # steady wherever glibc's mallopt exists
    assert all(r["dense_faults"] is None or r["dense_faults"] >= 0 for r in res["rows"])
    for r in res["rows"]:  # one timed round: its round efficiency is the efficiency
        assert r["efficiency_rounds"] == pytest.approx([r["efficiency"]] * 3, abs=1e-3)


def test_cli_single_policy_reports_the_allocator_it_timed_with(capsys):
    code = cli_main(["bench", "speed", "--model", "vit_tiny_patch16_224", "--img-size", "64", "--repeats", "1",
                     "--warmup", "0", "--threads", "1", "--device", "cpu", "--allocator", "system", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    # "system" in a fresh process; "steady" when an earlier test applied it (process-wide, not undone)
    assert res["allocator"] in ("system", "steady") and set(res["page_faults_per_call"]) == {"dense", "pruned"}
    assert res["efficiency_rounds"] == pytest.approx([res["efficiency"]] * 3, abs=1e-3)  # one round


@pytest.mark.parametrize("args,words", [
    (["--methods", "nosuch"], ["--methods:", "nosuch", "available"]),
    (["--methods", "all", "--batches", "1,x"], ["--batches"]),
    (["--methods", "all", "--batches", "0"], ["--batches must be >= 1"]),
    (["--methods", "all", "--dtype", "fp8"], ["--dtype", "fp32"]),
    (["--ragged", "packed"], ["--ragged", "auto, split, pack, pad"]),
    (["--ragged", "split,split"], ["--ragged", "repeats"]),
    (["--methods", "random", "--ragged", "split,pad"], ["--ragged", "one mode"]),
    (["--spread", "0.5"], ["--spread", "random-bernoulli"]),
    (["--policy", "random-bernoulli", "--spread", "1.5"], ["--spread", "[0, 1)"]),
    (["--methods", "random", "--spread", "0.2"], ["--spread", "--methods"]),
])
def test_cli_bad_options_are_one_line(capsys, monkeypatch, args, words):
    import patchprune.bench.speed as speed

    monkeypatch.setattr(speed, "run_methods_bench", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr(speed, "run_speed_bench", lambda *a, **k: pytest.fail("work started"))
    capsys.readouterr()
    code = cli_main(["bench", "speed", "--model", "vit_tiny_patch16_224", "--img-size", "64"] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("patchprune: error: ")
    for w in words:
        assert w in err[0], err[0]


def test_fp16_and_bf16_rows_run_on_the_cpu_too():
    if not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        pytest.skip("no CPU SDPA kernel")
    res = run_methods_bench("random", batches=(1,), dtypes=("bf16",), **TINY)
    assert res["rows"][0]["dtype"] == "bf16" and res["rows"][0]["pruned_ms"] > 0


def test_cpu_time_clock_for_busy_machines(capsys):
    res = run_methods_bench("random", batches=(1,), clock="cpu", **TINY)
    assert res["clock"] == "cpu" and res["rows"][0]["pruned_ms"] > 0
    assert "CPU time of one thread" in format_methods_table(res)
    with pytest.raises(ValueError, match="threads 1"):
        run_methods_bench("random", batches=(1,), clock="cpu", **{**TINY, "threads": 2})
    code = cli_main(["bench", "speed", "--methods", "random", "--cpu-time", "--threads", "2", "--model",
                     "vit_tiny_patch16_224", "--img-size", "64"])
    assert code == 2 and "--threads 1" in capsys.readouterr().err


def test_ragged_modes_side_by_side_with_spread_counts(capsys):
    # random-bernoulli with a wide spread: the samples keep very different counts; split runs none of
    # the padding (executed FLOPs = kept FLOPs), pad runs all of it (more executed FLOPs)
    code = cli_main(["bench", "speed", "--model", "vit_tiny_patch16_224", "--img-size", "96", "--batch", "4",
                     "--policy", "random-bernoulli", "--spread", "0.6", "--ragged", "split,pad", "--repeats", "1",
                     "--warmup", "0", "--threads", "1", "--device", "cpu", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    split, pad = res["by_ragged"]["split"], res["by_ragged"]["pad"]
    assert split["ran"] == ["split"] and pad["ran"] == ["pad"] and res["ragged"] == "split"
    assert split["flops_ratio_executed"] == pytest.approx(res["flops_ratio"], rel=1e-3)
    assert pad["flops_ratio_executed"] < 0.9 * split["flops_ratio_executed"]
    counts = res["tokens_per_sample"]["1"]
    assert counts == sorted(counts) and counts[-1] > 2 * counts[0]  # probability rises over the batch
    assert set(res["page_faults_per_call"]) == {"dense", "pruned", "pruned/pad"}
