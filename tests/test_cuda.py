"""Issue 10: every path runs on CUDA (selectors, runner, bench speed). Skipped without a CUDA GPU."""
import pytest
import timm
import torch

import patchprune
from patchprune.select import available_methods, method_spec, select
from patchprune.select.policies import tome_schedule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _attn(x: torch.Tensor, heads: int = 2) -> torch.Tensor:
    """[B, heads, 1+N, 1+N] softmax attention with a CLS row (float64 softmax, then fp32)."""
    B, N, _ = x.shape
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(B, heads, N + 1, N + 1, generator=g, dtype=torch.float64)
    return logits.softmax(-1).float()


@pytest.mark.parametrize("method", available_methods())
def test_selectors_pick_on_cuda_what_they_pick_on_the_cpu(method):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 64, 32, generator=g)
    attn = _attn(x) if method_spec(method).needs_attention else None
    cpu = select(x, 20, method, grid=(8, 8), attn=attn)
    gpu = select(x.cuda(), 20, method, grid=(8, 8), attn=None if attn is None else attn.cuda())
    assert gpu.tokens.device.type == "cuda" and gpu.index.device.type == "cuda"
    assert torch.equal(gpu.index.cpu(), cpu.index)
    torch.testing.assert_close(gpu.tokens.cpu(), cpu.tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", ["evtp", "attention", "visionzip", "vispruner", "tome", "tome-block", "evit", "vpp"])
def test_runner_on_cuda_keeps_what_it_keeps_on_the_cpu(schedule):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))

    def runner(model):
        if schedule == "tome-block":
            return patchprune.sparse_vit(model, tome_schedule(len(model.blocks), 3)).eval()
        if schedule in ("evit", "vpp"):
            kw = {"noise": False} if schedule == "vpp" else {}
            return patchprune.learned.build(schedule, model, **kw).eval().runner
        return patchprune.sparse_vit(model, {1: (schedule, 0.6), 3: (schedule, 0.8)}).eval()

    cpu_runner = runner(vit)
    with torch.inference_mode():
        ref = cpu_runner(images)
        gpu_runner = cpu_runner.cuda()
        out = gpu_runner(images.cuda())
    assert out.features.device.type == "cuda"
    assert {b: m.cpu().tolist() for b, m in out.keep_masks.items()} == {b: m.tolist() for b, m in ref.keep_masks.items()}
    torch.testing.assert_close(out.features.cpu(), ref.features, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_bench_speed_methods_on_cuda(dtype):
    from patchprune.bench.speed import run_methods_bench

    res = run_methods_bench("random,evtp,tome-block,vpp", batches=(1, 4), dtypes=(dtype,),
                            model="vit_tiny_patch16_224", img_size=64, warmup=1, repeats=2, device="cuda")
    assert res["device"] == torch.cuda.get_device_name(0)
    assert len(res["rows"]) == 8 and all("error" not in r and r["pruned_ms"] > 0 for r in res["rows"])


@pytest.mark.parametrize("mode", ["split", "pack"])
def test_ragged_batches_on_cuda_equal_the_padded_run(mode):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0).eval().cuda()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)).cuda()
    schedule = {1: ("random-bernoulli", 0.6, {"seed": 0, "spread": 0.6})}  # seeded: both runners draw alike
    with torch.no_grad():
        pad = patchprune.sparse_vit(vit, schedule).eval()(images)  # "auto" pads off the CPU
        ragged = patchprune.sparse_vit(vit, schedule, ragged=mode).eval()(images)
    assert set(pad.ragged.values()) == {"pad"} and set(ragged.ragged.values()) == {mode}
    assert len(set(pad.keep_masks[1].sum(1).tolist())) > 1
    assert torch.equal(ragged.keep_masks[1], pad.keep_masks[1])
    torch.testing.assert_close(ragged.features, pad.features, rtol=1e-4, atol=1e-4)


def test_bench_select_on_cuda_picks_what_the_cpu_picks():
    from patchprune.bench.select import run_bench

    kw = dict(frames=2, side=10, dim=48, ratios=(0.2,), methods=["evtp", "kcenter", "divprune", "attention"],
              repeats=1, warmup=0)
    gpu, cpu = run_bench(device="cuda", **kw), run_bench(device="cpu", **kw)
    assert gpu["device"] == torch.cuda.get_device_name(0)
    assert gpu["reference_divprune"]["0.2"]["same_picks"]
    for m in kw["methods"]:
        for space in ("radius_feature", "radius_spatial"):  # the same picks give the same radii
            assert abs(gpu["methods"][m]["0.2"][space] - cpu["methods"][m]["0.2"][space]) < 1e-4


@pytest.mark.parametrize("method", ["evtp", "vispruner", "tome"])
def test_hf_pruner_on_a_cuda_llava_keeps_what_it_keeps_on_the_cpu(method):
    from patchprune.hf import VisualTokenPruner, llava_prompt, tiny_llava

    cpu_model = tiny_llava("llama", "siglip")
    gpu_model = tiny_llava("llama", "siglip").cuda()  # same seed: the same weights
    ids, mask = llava_prompt([1, 2], 16, cpu_model.config.image_token_id, [4, 9], padding_side="left", seed=7)
    px = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = VisualTokenPruner(cpu_model, method, 0.25, padding_side="left").prepare(ids, px, mask)
        out = VisualTokenPruner(gpu_model, method, 0.25, padding_side="left").prepare(ids.cuda(), px.cuda(), mask.cuda())
        gen = VisualTokenPruner(gpu_model, method, 0.25, padding_side="left").generate(
            ids.cuda(), px.cuda(), mask.cuda(), max_new_tokens=3, do_sample=False)
    assert out.input_ids.device.type == "cuda" and gen.device.type == "cuda"
    assert torch.equal(out.input_ids.cpu(), ref.input_ids) and torch.equal(out.keep_counts.cpu(), ref.keep_counts)
    for a, b in zip(out.index, ref.index, strict=True):
        assert torch.equal(a.cpu(), b)
    for a, b in zip(out.features, ref.features, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-3)


def test_bench_mllm_on_cuda():
    from patchprune.bench.mllm import run_bench

    res = run_bench(["image-b1", "video-b4"], ["evtp", "visionzip"], (0.2,), repeats=1, warmup=0, text=5, tiny=True,
                    device="cuda")
    assert res["machine"]["device"] == torch.cuda.get_device_name(0)
    for sec in res["sections"].values():
        row = sec["ratios"]["0.2"]
        assert sec["vision_ms"] > 0 and row["prefill_ms"] > 0 and row["prefill_flop_ratio"] > 1
        assert all(v["select_ms"] > 0 for v in row["methods"].values())


def test_compiled_runner_on_cuda_equals_eager():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0, depth=3,
                            embed_dim=32, num_heads=2).eval().cuda()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).cuda()
    schedule = {1: ("evtp", 0.5), 2: ("random", 0.75, {"seed": 0})}
    with torch.inference_mode():
        ref = patchprune.sparse_vit(vit, schedule)(images)
        out = patchprune.sparse_vit(vit, schedule, compile=True)(images)
    assert {b: m.tolist() for b, m in out.keep_masks.items()} == {b: m.tolist() for b, m in ref.keep_masks.items()}
    torch.testing.assert_close(out.features, ref.features, rtol=1e-4, atol=1e-4)
