"""VisualTokenPruner on a tiny random Video-LLaVA: videos through its video tower, selected per frame."""
import pytest
import torch

from patchprune.hf import VisualTokenPruner, tiny_llava, tiny_video_llava
from patchprune.select import budget, select

FRAMES, N, T = 3, 16, 17  # 3 frames of 16 patches + the CLS the video tower keeps


@pytest.fixture(scope="module")
def model():
    return tiny_video_llava(seed=4)


def _prompt(model, side, rows=None):
    """Sample 0: an image and a video; sample 1: a video only (padded on `side`)."""
    itok, vtok = model.config.image_token_id, model.config.video_token_id
    rows = rows or [[1, 2] + [itok] * N + [3] + [vtok] * (FRAMES * T) + [4], [5] + [vtok] * (FRAMES * T) + [6, 7, 8]]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[b, sl], mask[b, sl] = torch.tensor(r), 1
    return ids, mask


def _pixels(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, 32, 32, generator=g), torch.randn(2, FRAMES, 3, 32, 32, generator=g)


@pytest.mark.parametrize("side", ["left", "right"])
def test_ratio_one_gives_exactly_the_unwrapped_logits(model, side):
    ids, mask = _prompt(model, side)
    px, pv = _pixels()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, pixel_values=px, pixel_values_videos=pv).logits
        out = VisualTokenPruner(model, "evtp", 1.0)(ids, px, mask, pixel_values_videos=pv).logits
    assert torch.equal(ref, out)


def test_frames_are_selected_one_by_one_and_keep_their_cls(model):
    ids, mask = _prompt(model, "left")
    px, pv = _pixels(1)
    pruner = VisualTokenPruner(model, "evtp", 0.25)
    with torch.no_grad():
        inp = pruner.prepare(ids, px, mask, ratio=[0.25, 0.5], pixel_values_videos=pv)
        full = model.model.get_video_features(pixel_values_videos=pv, return_dict=True)
    layer = model.config.vision_feature_layer
    vision = full.hidden_states[layer]  # [videos * frames, T, Dv], CLS first
    ks = [budget(N, 0.25)] * FRAMES + [budget(N, 0.5)] * FRAMES
    assert inp.video_keep_counts.tolist() == ks
    vtok = model.config.video_token_id
    assert (inp.input_ids == vtok).sum(1).tolist() == [FRAMES * (ks[0] + 1), FRAMES * (ks[-1] + 1)]
    for v, video in enumerate(inp.video_features):
        chunks = video.split([k + 1 for k in ks[v * FRAMES:(v + 1) * FRAMES]])
        for f, chunk in enumerate(chunks):
            frame = v * FRAMES + f
            picks = select(vision[frame:frame + 1, 1:], ks[frame], "evtp", (4, 4)).index[0]
            assert torch.equal(chunk[0], full.pooler_output[frame, 0])  # the CLS, kept first
            assert torch.equal(chunk[1:], full.pooler_output[frame, 1:][picks])


def test_batch_matches_each_sample_alone(model):
    ids, mask = _prompt(model, "left")
    px, pv = _pixels(2)
    pruner = VisualTokenPruner(model, "visionzip", 0.3, padding_side="left")
    with torch.no_grad():
        inp = pruner.prepare(ids, px, mask, ratio=[0.3, 0.6], pixel_values_videos=pv)
        out = model(**inp.model_kwargs()).logits
        alone0 = pruner(ids[0][mask[0].bool()][None], px, ratio=0.3, pixel_values_videos=pv[:1]).logits[0]
        alone1 = pruner(ids[1][mask[1].bool()][None], None, ratio=0.6, pixel_values_videos=pv[1:]).logits[0]
    for b, alone in enumerate((alone0, alone1)):
        real = inp.attention_mask[b].bool()
        assert torch.allclose(out[b][real], alone, atol=1e-5)


def test_video_errors(model):
    ids, mask = _prompt(model, "left")
    px, pv = _pixels()
    pruner = VisualTokenPruner(model, "evtp", 0.5)
    with pytest.raises(ValueError, match="videos missing: sample 1"):
        pruner(ids, px, mask, pixel_values_videos=pv[:1])
    with pytest.raises(ValueError, match="pixel_values_videos must be"):
        pruner(ids, px, mask, pixel_values_videos=pv[0])
    with pytest.raises(ValueError, match="pass pixel_values"):
        pruner(ids, None, mask)
    llava = tiny_llava()
    with pytest.raises(ValueError, match="has no video tower"):
        VisualTokenPruner(llava, "evtp", 0.5)(ids, None, mask, pixel_values_videos=pv)


def test_video_pruning_leaves_the_model_unchanged():
    import copy

    model = tiny_video_llava(seed=5)
    twin = copy.deepcopy(model)
    ids, mask = _prompt(model, "left")
    px, pv = _pixels(3)
    with torch.no_grad():
        twin(input_ids=ids, attention_mask=mask, pixel_values=px, pixel_values_videos=pv)  # transformers' own hooks
        VisualTokenPruner(model, "vispruner", 0.5)(ids, px, mask, pixel_values_videos=pv)
        VisualTokenPruner(model, "evtp", 0.25).generate(ids, px, mask, pixel_values_videos=pv, max_new_tokens=2)

    def hooks(m):
        return sorted((n, len(x._forward_hooks), len(x._forward_pre_hooks)) for n, x in m.named_modules())

    assert hooks(model) == hooks(twin)
    assert [type(m) for m in model.modules()] == [type(m) for m in twin.modules()]
    sd, sd_twin = model.state_dict(), twin.state_dict()
    assert all(torch.equal(sd[k], sd_twin[k]) for k in sd_twin) and sd.keys() == sd_twin.keys()
    assert all(set(vars(a)) == set(vars(b)) for a, b in zip(model.modules(), twin.modules()))
