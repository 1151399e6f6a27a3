"""Issue 10: the torch.compile path of the runner (gather execution at fixed budgets) gives the eager outputs."""
import shutil

import pytest
import timm
import torch

import patchprune


def _compile_available() -> bool:
    try:
        import torch._dynamo

        return torch._dynamo.is_dynamo_supported() and any(shutil.which(c) for c in ("cc", "gcc", "g++", "clang"))
    except Exception:  # noqa: BLE001 - any failure means: no compile here
        return False


@pytest.mark.skipif(not _compile_available(), reason="torch.compile (or a C compiler for inductor) is unavailable")
def test_compiled_runner_equals_eager_at_fixed_budgets():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0, depth=3,
                            embed_dim=32, num_heads=2).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    schedule = {1: ("evtp", 0.5), 2: ("random", 0.75, {"seed": 0})}
    eager = patchprune.sparse_vit(vit, schedule)
    compiled = patchprune.sparse_vit(vit, schedule, compile=True)
    assert compiled.compile and compiled.execution_in_force == "gather"
    with torch.inference_mode():
        ref = eager(images)
        for _ in range(2):  # the second call reuses the compiled graphs
            out = compiled(images)
            assert {b: m.tolist() for b, m in out.keep_masks.items()} == {b: m.tolist() for b, m in ref.keep_masks.items()}
            torch.testing.assert_close(out.features, ref.features, rtol=1e-4, atol=1e-5)


def test_compile_flag_is_off_by_default():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0, depth=2).eval()
    assert not patchprune.sparse_vit(vit, {1: ("random", 0.5)}).compile
