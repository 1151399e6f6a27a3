"""Issue "every path runs on CUDA": `bench fgseg --device cuda` (dense training, a learned fine-tune,
evaluation, timing) and every learned pruning method (one training step; in eval mode the same kept
tokens as on the CPU for the same weights and inputs). Skipped without a CUDA GPU; the CPU side of
these checks is tests/test_fgseg_device.py."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from patchprune.learned import available_methods, build
from patchprune.learned.registry import LOSS_KEY
from patchprune.train.checkpoint import checkpoint_meta
from patchprune.video import VideoStream
from test_fgseg_device import TINY  # one seed, tiny data and model, VPP at 55 % only
from test_learned_helpers import tiny_vit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def learned_clip(frames: int = 3, batch: int = 2, size: int = 48, seed: int = 1) -> list[torch.Tensor]:
    """A short clip of related random frames (CPU): Map-SM acts from the second frame on."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, 3, size, size, generator=g)
    return [base + 0.3 * torch.randn(batch, 3, size, size, generator=g) for _ in range(frames)]


def eval_pruner(method: str):
    """`method` on a tiny 12-block ViT with a CLS token (EViT needs one), built on the CPU, in eval mode;
    VPP's inference noise off so that both devices decide alike."""
    options = {"noise": False} if method in ("vpp", "vpp-sm-only") else {}
    return build(method, tiny_vit(cls=True), 0.55, **options).eval()


def stream_clip(pruner, clip: list[torch.Tensor]) -> list:
    """Outputs of streaming `clip` through `pruner` (inference) on the pruner's device."""
    device = next(pruner.parameters()).device
    stream, outs = VideoStream(), []
    with torch.inference_mode():
        for x in clip:
            stream.start_frame()
            outs.append(pruner(x.to(device), stream=stream))
    return outs


def keep_lists(out) -> dict[int, list]:
    return {b: m.cpu().tolist() for b, m in out.keep_masks.items()}


@pytest.fixture(autouse=True)
def no_tf32():
    """Full fp32 on the GPU (cuDNN's convolutions, the patch embedding, default to TF32): CPU and
    GPU may then differ by rounding only."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("method", available_methods())
def test_learned_method_trains_one_step_on_cuda(method):
    torch.manual_seed(0)
    pruner = build(method, tiny_vit(cls=True), 0.55).cuda().train()
    params = [p for p in pruner.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    stream = VideoStream(keep_graph=True)  # the fgseg chain's stream: gradients reach the earlier frames
    loss = torch.zeros((), device="cuda")
    for x in learned_clip():
        stream.start_frame()
        out = pruner(x.cuda(), stream=stream)
        assert out.features.device.type == "cuda"
        loss = loss + out.features.square().mean() + out.aux.get(LOSS_KEY, 0.0)
    assert loss.device.type == "cuda" and math.isfinite(loss.item())
    opt.zero_grad()
    loss.backward()
    for name, p in pruner.runner.policies.named_parameters():
        assert p.grad is not None and p.grad.device.type == "cuda", f"{method}: no CUDA gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"{method}: non-finite gradient for {name}"
    opt.step()
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("method", available_methods())
def test_learned_method_keeps_on_cuda_what_it_keeps_on_the_cpu(method):
    clip = learned_clip()
    cpu = eval_pruner(method)
    ref = stream_clip(cpu, clip)
    gpu = stream_clip(copy.deepcopy(cpu).cuda(), clip)
    for t, (a, b) in enumerate(zip(ref, gpu)):
        assert b.features.device.type == "cuda"
        assert keep_lists(b) == keep_lists(a), f"{method}: frame {t} keeps other tokens on CUDA"
        torch.testing.assert_close(b.features.cpu(), a.features, rtol=1e-3, atol=1e-3)


def _finite(res: dict) -> None:
    assert math.isfinite(res["dense_final_loss"])
    for row in res["results"]:
        assert all(math.isfinite(row[k]) for k in ("miou", "pkr", "gmacs", "latency_ms", "batch_ms")), row
        assert row["latency_ms"] > 0
        final = row["finetune_final"]
        if final is not None:
            assert all(math.isfinite(v) for v in final.values()), row


def test_fgseg_seed_trains_fine_tunes_evaluates_and_times_on_cuda(tmp_path):
    from patchprune.fgseg.study import aggregate, run_seed, write_report
    from patchprune.train.distributed import run_device

    device = run_device("cuda")
    res = run_seed(TINY, 0, tmp_path / "runs", progress=False, quiet=True, device=device)
    _finite(res)
    assert [r["method"] for r in res["results"]] == ["dense", "vpp"] and res["results"][1]["pkr"] < 1.0
    for name in ("dense", "vpp_55"):
        assert checkpoint_meta(tmp_path / "runs" / f"{name}.safetensors")["device"] == str(device)
    readme = write_report(tmp_path / "out", TINY, aggregate([res]), [res], 1.0, "quick", device=device)
    assert "CUDA speed-up (batch 1)" in readme and "--device cuda" in readme


def test_cpu_trained_work_folder_is_reevaluated_on_cuda_without_training(tmp_path):
    from patchprune.fgseg.study import run_seed

    run_seed(TINY, 0, tmp_path, progress=False, quiet=True)  # trained on the CPU
    written = {f.name: f.read_bytes() for f in tmp_path.glob("*.safetensors")}
    res = run_seed(TINY, 0, tmp_path, progress=False, quiet=True, device="cuda")
    _finite(res)
    assert {f.name: f.read_bytes() for f in tmp_path.glob("*.safetensors")} == written  # loaded, never re-saved
    assert all(checkpoint_meta(tmp_path / name)["device"] == "cpu" for name in written)
