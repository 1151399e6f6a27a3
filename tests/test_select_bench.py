"""`patchprune bench select`: inputs, reference DivPrune and the JSON shape (tiny sizes, no timing checks)."""
import json

import torch

from patchprune.bench.select import reference_divprune, structured_tokens
from patchprune.cli import main
from patchprune.select import select


def test_structured_tokens_are_clustered_and_deterministic():
    x = structured_tokens(frames=2, grid=(9, 9), dim=32, seed=4)
    assert x.shape == (2, 81, 32) and torch.equal(x, structured_tokens(frames=2, grid=(9, 9), dim=32, seed=4))
    xh = torch.nn.functional.normalize(x[0], dim=-1)
    neighbours = (xh[:-1] * xh[1:]).sum(-1).mean()  # horizontally adjacent tokens
    far = (xh[:40] * xh[41:]).sum(-1).mean()  # tokens half an image apart
    assert neighbours > far


def test_reference_divprune_agrees_with_the_library():
    x = structured_tokens(frames=3, grid=(8, 8), dim=24, seed=1)
    for k in (1, 5, 20):
        assert torch.equal(reference_divprune(x, k), select(x, k, method="divprune").order)


def test_bench_reports_every_method_and_ratio(capsys):
    code = main(["bench", "select", "--json", "--frames", "2", "--side", "6", "--dim", "16", "--ratios", "0.2,0.5",
                 "--repeats", "1", "--warmup", "0"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["n"], res["frames"], res["dim"]) == (36, 2, 16)
    for method, per in res["methods"].items():
        assert set(per) == {"0.2", "0.5"}, method
        for entry in per.values():
            assert entry["ms"] > 0 and entry["radius_feature"] >= 0 and entry["radius_spatial"] >= 0
    assert set(res["reference_divprune"]) == {"0.2", "0.5"}
    assert all(v["same_picks"] for v in res["reference_divprune"].values())
    assert set(res["checks"]) == {"evtp_0.2_ms_le_20", "divprune_0.2_speedup_ge_3",
                                  "evtp_spatial_radius_below_kcenter_and_divprune"}


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "select", "--texture", "0.3", "--repeats", "1"]) == 2
    assert "--texture" in capsys.readouterr().err


def test_bench_select_takes_a_device_and_reports_it():
    from patchprune.bench.select import run_bench

    res = run_bench(frames=1, side=6, dim=16, ratios=(0.2,), methods=["evtp"], repeats=1, warmup=0,
                    device=torch.device("cpu"))
    assert res["device"].startswith("cpu (") and res["methods"]["evtp"]["0.2"]["k"] == 7
