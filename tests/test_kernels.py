"""oneDNN only where a block's shape repeats (`patchprune.kernels`), in isolation and in the runner."""
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import patchprune as pp
from patchprune.kernels import kernels_for, onednn_off

CPU = torch.device("cpu")


def test_steps_whose_counts_vary_run_without_onednn_on_a_cpu_only():
    with kernels_for(True, CPU):
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled  # restored
    with kernels_for(False, CPU):
        assert torch.backends.mkldnn.enabled
    with kernels_for(True, torch.device("meta")):  # not a CPU: nothing to switch
        assert torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError):  # restored after an error too
        with kernels_for(True, CPU):
            raise RuntimeError("boom")
    assert torch.backends.mkldnn.enabled


def test_the_users_setting_is_left_alone():
    with onednn_off():  # the user switched oneDNN off: it stays off
        with kernels_for(False, CPU):
            assert not torch.backends.mkldnn.enabled
        with kernels_for(True, CPU):
            assert not torch.backends.mkldnn.enabled
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled


class RecordingGELU(nn.Module):
    """GELU that records whether oneDNN was allowed when it ran (one entry per call)."""

    log: list[bool] = []

    def forward(self, x):
        RecordingGELU.log.append(torch.backends.mkldnn.enabled)
        return F.gelu(x)


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64, depth=4,
                             act_layer=RecordingGELU).eval()


def _calls(runner, x, n):
    out = []
    with torch.no_grad():
        for _ in range(n):
            RecordingGELU.log = []
            runner(x)
            out.append(list(RecordingGELU.log))
    return out


@pytest.mark.parametrize("ragged", ["split", "pad"])
def test_blocks_after_a_policy_whose_counts_vary_never_use_onednn(ragged):
    """random-bernoulli draws new counts on every call: the blocks after its site run ATen's kernels
    on every call, the first call included (the choice never depends on earlier calls); the blocks
    before it keep oneDNN."""
    runner = pp.sparse_vit(_vit(), {2: ("random-bernoulli", 0.5, {"seed": 0})}, ragged=ragged).eval()
    logs = _calls(runner, torch.randn(4, 3, 64, 64), 3)
    assert logs == [[True, True, False, False]] * 3
    assert torch.backends.mkldnn.enabled


def test_fixed_budgets_keep_onednn():
    runner = pp.sparse_vit(_vit(), "1:0.5,3:0.5", default_policy="topk-norm").eval()
    assert _calls(runner, torch.randn(2, 3, 64, 64), 2) == [[True] * 4] * 2
    fixed_draw = pp.sparse_vit(_vit(), {2: ("random", 0.5, {"seed": 0})}).eval()  # "fixed": a budget
    assert _calls(fixed_draw, torch.randn(2, 3, 64, 64), 1) == [[True] * 4]


def test_learned_policies_say_whether_their_counts_follow_the_input():
    from patchprune.learned import build

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32).eval()  # 12 blocks
    vary = {name: any(p.counts_vary for p in build(name, vit, target=0.55).runner.policies.values())
            for name in ("vpp", "svit", "dynamicvit", "tps", "evit")}
    assert vary == {"vpp": True, "svit": True, "dynamicvit": False, "tps": False, "evit": False}


def test_outputs_do_not_depend_on_the_kernel_choice():
    """A repeated call (oneDNN's GELU) and the same call with oneDNN off (ATen's): equal to fp32 rounding."""
    runner = pp.sparse_vit(_vit(), "1:0.5,3:0.5", default_policy="topk-norm").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        runner(x)
        on = runner(x)
        with onednn_off():
            off = runner(x)
    assert on.keep_masks.keys() == off.keep_masks.keys()
    assert all(torch.equal(on.keep_masks[k], off.keep_masks[k]) for k in on.keep_masks)
    torch.testing.assert_close(on.features, off.features, rtol=1e-5, atol=1e-5)
