"""`patchprune bench mllm --tiny`: the report's shape, its FLOP ratios and the option checks (no timing checks)."""
import json

import pytest

from patchprune.bench.mllm import PREFILL_TRUST, must_show, timing_warnings
from patchprune.cli import main
from patchprune.metrics.mllm_flops import mllm_macs, spec_from_llava_config
from patchprune.hf import bench_llava
from patchprune.hf.factory import bench_llava_config


def test_tiny_bench_reports_every_section_method_and_ratio(capsys):
    code = main(["bench", "mllm", "--tiny", "--json", "--sections", "image-b1,video-b4", "--methods",
                 "evtp,random,visionzip", "--ratios", "0.1,0.2", "--repeats", "1", "--warmup", "0", "--text", "5"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["sections"]) == ["image-b1", "video-b4"]
    spec = spec_from_llava_config(bench_llava(tiny=True).config)
    for name, sec in res["sections"].items():
        N, frames, batch = sec["tokens_per_frame"], sec["frames"], sec["batch"]
        assert (N, batch, frames) == ((48 // 8) ** 2, *{"image-b1": (1, 1), "video-b4": (4, 4)}[name])
        assert sec["vision_ms"] > 0 and len(sec["vision_ms_per_sample"]) == batch
        assert set(sec["ratios"]) == {"0.1", "0.2"}
        for r, row in sec["ratios"].items():
            k = max(1, round(float(r) * N))
            assert row["k"] == k
            dense = mllm_macs(spec, sec["text_tokens"], frames, None, batch=batch).prefill
            assert row["prefill_flop_ratio"] == pytest.approx(dense / mllm_macs(spec, sec["text_tokens"], frames, k,
                                                                                batch=batch).prefill)
            causal = mllm_macs(spec, sec["text_tokens"], frames, None, batch=batch, causal=True).prefill
            assert row["prefill_flop_ratio_causal"] == pytest.approx(
                causal / mllm_macs(spec, sec["text_tokens"], frames, k, batch=batch, causal=True).prefill)
            # the causal count removes part of the quadratic term, so it never exceeds the full one
            assert 1 < row["prefill_flop_ratio_causal"] <= row["prefill_flop_ratio"] and row["prefill_ms"] > 0
            assert row["prefill_efficiency_causal"] >= row["prefill_efficiency"]
            assert set(row["methods"]) == {"evtp", "random", "visionzip"}
            for m, v in row["methods"].items():
                assert v["select_ms"] > 0 and v["end_to_end_flop_ratio"] > 1
        assert ("ttft_ms" in sec) == (batch == 1)
        if batch == 1:  # TTFT includes the vision time it reuses
            assert set(sec["ttft_ms"]) == {"dense", "0.2"} and min(sec["ttft_ms"].values()) > sec["vision_ms"]
    checks = res["must_show"]
    assert [c["section"] for c in checks] == ["image-b1"] * 3 + ["video-b4"] * 3
    assert all(c["status"] in ("pass", "miss") for c in checks)
    assert isinstance(res["warnings"], list)
    assert res["machine"]["device"] == "cpu"  # the default


def test_must_show_judges_the_evtp_row():
    row = {"prefill_speedup": 4.0, "prefill_flop_ratio": 4.2, "prefill_flop_ratio_causal": 3.9,
           "methods": {"evtp": {"select_share_of_saving": 0.02}}}
    checks = must_show({"s": {"ratios": {"0.2": row}}})
    assert [c["status"] for c in checks] == ["pass", "pass", "miss"]
    row["prefill_speedup"], row["methods"]["evtp"]["select_share_of_saving"] = 3.6, None
    assert [c["status"] for c in must_show({"s": {"ratios": {"0.2": row}}})] == ["miss", "pass", "miss"]
    row["prefill_speedup"] = 3.0
    assert [c["status"] for c in must_show({"s": {"ratios": {"0.2": row}}})] == ["miss", "miss", "miss"]


def test_a_prefill_faster_than_its_causal_flop_ratio_flags_the_section():
    rows = {"0.1": {"prefill_speedup": 4.0, "prefill_efficiency_causal": 0.95},
            "0.2": {"prefill_speedup": 5.0, "prefill_efficiency_causal": PREFILL_TRUST + 0.1}}
    warnings = timing_warnings({"image-b4": {"ratios": rows}, "video-b1": {"ratios": {"0.2": rows["0.1"]}}})
    assert len(warnings) == 1 and warnings[0].startswith("[image-b4] ratio 0.2: prefill speed-up 5.00x")


@pytest.mark.parametrize("argv,msg", [
    (["--sections", "image-b9"], "unknown section"),
    (["--ratios", "0.2,1.5"], "--ratios must lie"),
    (["--ratios", "a"], "comma-separated"),
    (["--methods", "evtp,nope"], "selection method"),
    (["--repeats", "0"], "--repeats"),
    (["--device", "tpu"], "--device 'tpu'"),
])
def test_bad_options_are_one_line_errors(capsys, argv, msg):
    assert main(["bench", "mllm", "--tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_plan_counts_the_macs_of_the_run(capsys):
    def plan(*argv):
        assert main(["bench", "mllm", "--plan", *argv]) == 0
        return json.loads(capsys.readouterr().out)["planned_tmacs"]

    full, one_round = plan(), plan("--repeats", "1")
    image = plan("--sections", "image-b1", "--ratios", "0.2", "--repeats", "1", "--no-ttft")
    spec = spec_from_llava_config(bench_llava_config())
    dense = mllm_macs(spec, 32 + 1, 1, None)
    expected = 2 * (dense.vision + dense.projector) + dense.prefill + mllm_macs(spec, 33, 1, 146).prefill
    assert image == pytest.approx(expected / 1e12)
    assert one_round < full < 2 * one_round and 20 < full < 40  # the default run: ~30 T MACs
