"""The IVS model runs its vision side once per distinct frame of a batch (`IVSBatch.frame_ids`): a video's
key frames are each other's references, and expressions of one image share it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from patchprune.ivs.config import named_config
from patchprune.ivs.model import IVSBatch, IVSModel, unique_frames
from patchprune.ivs.tokenizer import build_tokenizer, encode_prompt

TEXTS = ["the red star on the left", "the blue square"]


def _video_batch(tok, cfg, T: int = 4) -> tuple[IVSBatch, IVSBatch]:
    """One video of T frames, every frame a key with its cfg.ref_frames neighbours: (with ids, without)."""
    from patchprune.ivs.data import reference_indices

    S = cfg.img_size
    frames = torch.randn(T, 3, S, S, generator=torch.Generator().manual_seed(3))
    refs_at = [reference_indices(t, T, cfg.ref_frames) for t in range(T)]
    ids, refer = encode_prompt(tok, TEXTS[0])
    n = len(ids)
    text = torch.tensor(ids).expand(T, n).clone()
    mask = torch.ones(T, n, dtype=torch.bool)
    refer_mask = torch.zeros(T, n, dtype=torch.bool)
    refer_mask[:, :len(refer)] = torch.tensor(refer)
    refs = torch.stack([frames[r] for r in refs_at])
    order = list(range(T)) + [r for rs in refs_at for r in rs]
    plain = IVSBatch(frames, refs, text, mask, refer_mask)
    return IVSBatch(frames, refs, text, mask, refer_mask, torch.tensor(order)), plain


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer(TEXTS)
    torch.manual_seed(0)
    model = IVSModel(named_config("micro", vocab_size=tok.get_vocab_size())).eval()
    return tok, model


def test_unique_frames_finds_first_positions_and_spreads_back():
    first, inverse = unique_frames(torch.tensor([5, 7, 5, 9, 7]))
    assert first.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1]
    assert unique_frames(torch.tensor([1, 2, 3])) is None and unique_frames(None) is None


@pytest.mark.parametrize("method, ratio", [("dense", 1.0), ("evtp", 0.25), ("vispruner", 0.25)])
def test_distinct_frames_once_gives_the_same_output(setup, method: str, ratio: float):
    tok, model = setup
    with_ids, plain = _video_batch(tok, model.config)
    sizes = []
    pre = model.vision.register_forward_pre_hook(lambda mod, args, kwargs: sizes.append(kwargs["pixel_values"].shape[0]),
                                                  with_kwargs=True)
    try:
        with torch.no_grad():
            a = model(with_ids, method=method, ratio=ratio)
            b = model(plain, method=method, ratio=ratio)
    finally:
        pre.remove()
    T, R = with_ids.key.shape[0], with_ids.refs.shape[1]
    assert sizes == [T, T * (1 + R)]  # the tower ran on the 4 distinct frames, not on 4 x 3
    assert torch.equal(a.kept_index, b.kept_index)
    for x, y in zip(a.mask_logits, b.mask_logits):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_make_batch_gives_shared_frames_one_id(tmp_path: Path):
    from patchprune.data.synth_refer import write_synth_refer
    from patchprune.ivs.data import load_items, make_batch

    write_synth_refer(tmp_path, images=3, videos=2, frames=3, size=32, seed=2, progress=False, min_objects=2,
                      max_objects=2, min_radius=0.2, max_radius=0.3)
    tok = build_tokenizer(["the"])
    video = load_items(tmp_path, "video", "train", 32)[0]
    b, _, _ = make_batch([video] * 3, [0, 1, 2], tok, ref_frames=2)
    # keys 0, 1, 2, then the references (0, 1), (0, 2), (1, 2) of each key: three distinct frames
    assert b.frame_ids.tolist() == [0, 1, 2, 0, 1, 0, 2, 1, 2]
    images = load_items(tmp_path, "image", "train", 32)
    same = [it for it in images if it.source == images[0].source]
    assert len(same) >= 2  # two objects of one image: two expressions of it
    b, _, _ = make_batch(same[:2] + [it for it in images if it.source != images[0].source][:1], [0, 0, 0], tok, 2)
    assert b.frame_ids.tolist() == [0, 0, 1] and b.refs is None
