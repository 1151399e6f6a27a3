"""Streaming keeps no graph outside a training chain (issue 13, item 2), and `bench soak` runs."""
from __future__ import annotations

import timm
import torch

from patchprune.learned import build
from patchprune.video import VideoStream


def tiny_vpp():
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=48, patch_size=8,
                            embed_dim=32, depth=12, num_heads=2, class_token=False, global_pool="",
                            dynamic_img_size=True)
    return build("vpp", vit, 0.55).train()


def _stream(keep_graph: bool, frames: int = 3):
    pruner, stream = tiny_vpp(), VideoStream(keep_graph=keep_graph)
    x = torch.randn(frames, 2, 3, 48, 48, requires_grad=True)
    outs = []
    for t in range(frames):
        stream.start_frame()
        outs.append(pruner(x[t], stream=stream))
    return x, stream, outs


def test_default_stream_detaches_its_cache_in_a_grad_recording_mode():
    x, stream, outs = _stream(keep_graph=False)
    (cache,) = stream.caches.values()
    assert cache.keys.grad_fn is None and cache.values.grad_fn is None and not cache.keys.requires_grad
    # the last frame's outputs still carry a graph (training of that frame works) but it stops at the cache
    outs[-1].aux["sparsity"][1].prob_mean.backward()
    assert x.grad is not None
    assert x.grad[:-1].abs().sum() == 0 and x.grad[-1].abs().sum() > 0


def test_keep_graph_stream_lets_gradients_reach_earlier_frames():
    x, stream, outs = _stream(keep_graph=True)
    (cache,) = stream.caches.values()
    assert cache.keys.grad_fn is not None and cache.values.grad_fn is not None
    outs[-1].aux["sparsity"][1].prob_mean.backward()  # frame t-1 reaches it through the cached x_1 / x_6
    assert x.grad[-2].abs().sum() > 0


def test_detach_truncates_a_keep_graph_stream():
    _, stream, _ = _stream(keep_graph=True, frames=2)
    (cache,) = stream.detach_().caches.values()
    assert cache.keys.grad_fn is None and cache.values.grad_fn is None


def test_fgseg_training_chain_keeps_the_graph(monkeypatch):
    """The fgseg chain asks for the graph explicitly (its gradient must reach ref-ref and ref)."""
    import patchprune.fgseg.training as training

    made = []
    real = training.VideoStream

    def spy(*args, **kwargs):
        made.append(kwargs.get("keep_graph", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "VideoStream", spy)
    pruner = tiny_vpp()

    class Seg(torch.nn.Module):
        def forward(self, im, encoder=None, stream=None):
            out = encoder(im, stream=stream)
            return out.features.mean(1, keepdim=True).repeat(1, 2, 8, 8), out

    images = [torch.randn(1, 3, 48, 48) for _ in range(3)]
    labels = [torch.zeros(1, 48, 48, dtype=torch.long) for _ in range(3)]
    training.run_chain(Seg(), pruner, images, labels)
    assert made == [True]


def test_bench_soak_streams_cuts_and_resolution_changes_without_keeping_a_graph():
    from patchprune.bench.soak import run_soak

    lines: list[str] = []
    res = run_soak(frames=12, every=4, switch=5, mode="grad", log=lines.append)
    assert [f for f, _ in res["rss_mb"]] == [4, 8, 12] and len(lines) == 3
    assert res["graph_kept"] is False
    assert res["resets"] >= 2  # two resolution changes at least (frames 5 and 10), plus the clips' cuts
    assert res["from_frame"] == 4 and isinstance(res["growth_pct"], float)
