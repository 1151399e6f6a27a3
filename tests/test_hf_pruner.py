"""VisualTokenPruner on tiny random LLaVA models: equality at ratio 1, pruned batches, generate, bad input."""
import copy

import pytest
import torch

from patchprune.hf import VisualTokenPruner, llava_prompt, tiny_llava, tiny_video_llava
from patchprune.select import available_methods, budget, select

N = 16  # 32 px images, 8 px patches


@pytest.fixture(scope="module")
def models():
    return {"siglip-llama": tiny_llava("llama", "siglip"), "clip-qwen2": tiny_llava("qwen2", "clip", seed=1),
            "video-llava": tiny_video_llava(seed=2)}


def _images(n, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["siglip-llama", "clip-qwen2", "video-llava"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_ratio_one_gives_exactly_the_unwrapped_logits(models, name, side):
    model = models[name]
    ids, mask = llava_prompt([1, 2], N, model.config.image_token_id, [5, 9], padding_side=side)
    px = _images(3)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, pixel_values=px).logits
        out = VisualTokenPruner(model, "evtp", 1.0)(ids, px, mask).logits
    assert torch.equal(ref, out)


@pytest.mark.parametrize("name,side", [("siglip-llama", "left"), ("siglip-llama", "right"), ("video-llava", "left")])
def test_batch_with_per_sample_ratios_matches_each_sample_alone(models, name, side):
    model = models[name]
    tok = model.config.image_token_id
    ids, mask = llava_prompt([1, 2, 1], N, tok, [4, 7, 11], padding_side=side, seed=3)
    px = _images(4, seed=1)
    ratios = [0.25, 0.5, 0.1]
    pruner = VisualTokenPruner(model, "evtp", 0.2, padding_side=side)
    with torch.no_grad():
        inp = pruner.prepare(ids, px, mask, ratio=ratios)
        out = model(**inp.model_kwargs()).logits
    ks = [budget(N, r) for r in ratios]
    assert inp.keep_counts.tolist() == [ks[0], ks[1], ks[1], ks[2]]
    assert ((inp.input_ids == tok) & inp.attention_mask.bool()).sum(1).tolist() == [ks[0], 2 * ks[1], ks[2]]
    assert out.shape[1] < ids.shape[1]
    first_image = [0, 1, 3]
    for b, n_img in enumerate([1, 2, 1]):
        alone_ids = ids[b][mask[b].bool()][None]
        with torch.no_grad():
            alone = pruner(alone_ids, px[first_image[b]: first_image[b] + n_img], ratio=ratios[b]).logits[0]
        real = inp.attention_mask[b].bool()
        assert real.sum() == alone.shape[0]
        assert torch.allclose(out[b][real], alone, atol=1e-5)


def test_kept_features_are_the_selected_rows_of_the_projected_features(models):
    model = models["siglip-llama"]
    ids, mask = llava_prompt([2], N, model.config.image_token_id, [6])
    px = _images(2, seed=2)
    pruner = VisualTokenPruner(model, "evtp", 0.25)
    with torch.no_grad():
        feats = pruner.encode(px)
        full = model.get_image_features(pixel_values=px).pooler_output
        inp = pruner.prepare(ids, px, mask, features=feats)
    k = budget(N, 0.25)
    expected = select(feats.vision, k, "evtp", (4, 4))
    for i in range(2):
        assert torch.equal(inp.index[i], expected.index[i])
        assert torch.equal(inp.features[i], full[i][expected.index[i]])  # gathered after the projector
    assert not torch.equal(inp.features[0], full[0][:k])  # something other than the first k rows


def test_video_frames_are_selected_per_frame(models):
    model = models["siglip-llama"]
    frames = 4
    ids, mask = llava_prompt([frames], N, model.config.image_token_id, [5])
    px = _images(frames, seed=5)
    pruner = VisualTokenPruner(model, "kcenter", 0.25)
    with torch.no_grad():
        inp = pruner.prepare(ids, px, mask)
        for f in range(frames):
            alone = pruner.prepare(llava_prompt([1], N, model.config.image_token_id, [5])[0], px[f:f + 1])
            assert torch.equal(inp.index[f], alone.index[0])
    assert len({tuple(i.tolist()) for i in inp.index}) > 1  # frames differ, so do their picks


@pytest.mark.parametrize("method", available_methods())
def test_every_method_prunes_a_padded_batch(models, method):
    model = models["clip-qwen2"]
    ids, mask = llava_prompt([2, 1], N, model.config.image_token_id, [3, 8], padding_side="left")
    with torch.no_grad():
        out = VisualTokenPruner(model, method, 0.25)(ids, _images(3), mask, ratio=[0.25, 0.5])
    width = max(3 + 2 + 2 * budget(N, 0.25), 8 + 1 + budget(N, 0.5))  # text + separators + kept tokens
    assert out.logits.shape == (2, width, model.config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", ["siglip-llama", "video-llava"])
def test_generate_with_pruning_matches_each_sample_alone(models, name):
    model = models[name]
    ids, mask = llava_prompt([1, 2], N, model.config.image_token_id, [4, 9], padding_side="left", seed=7)
    px = _images(3, seed=4)
    pruner = VisualTokenPruner(model, "evtp", 0.25, padding_side="left")
    with torch.no_grad():
        inp = pruner.prepare(ids, px, mask)
        gen = pruner.generate(ids, px, mask, max_new_tokens=3, do_sample=False)
        alone = [pruner.generate(ids[b][mask[b].bool()][None], px[sl], max_new_tokens=3, do_sample=False)
                 for b, sl in ((0, slice(0, 1)), (1, slice(1, 3)))]
        prompts = [pruner.prepare(ids[b][mask[b].bool()][None], px[sl]).input_ids.shape[1]
                   for b, sl in ((0, slice(0, 1)), (1, slice(1, 3)))]
    width = inp.input_ids.shape[1]
    assert gen.shape[1] <= width + 3 and torch.equal(gen[:, :width], inp.input_ids)
    for b in range(2):  # same new tokens as the sample alone (generation may stop early at EOS)
        new = alone[b][0, prompts[b]:]
        assert new.numel() >= 1 and torch.equal(gen[b, width:width + new.numel()], new)


def _hooks(model):
    return sorted((n, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for n, m in model.named_modules())


@pytest.mark.parametrize("build", [lambda: tiny_llava("llama", "siglip", seed=3), lambda: tiny_video_llava(seed=3)],
                         ids=["llava", "video-llava"])
def test_the_users_model_is_unchanged(build):
    model = build()
    twin = copy.deepcopy(model)
    ids, mask = llava_prompt([1, 1], N, model.config.image_token_id, [4, 6])
    px = _images(2)
    with torch.no_grad():
        twin(input_ids=ids, attention_mask=mask, pixel_values=px)  # transformers' own lazy output hooks
        for method in ("evtp", "visionzip", "tome"):
            VisualTokenPruner(model, method, 0.25)(ids, px, mask)
        VisualTokenPruner(model, "vispruner", 0.5).generate(ids, px, mask, max_new_tokens=2)
    assert [type(m) for m in model.modules()] == [type(m) for m in twin.modules()]
    assert _hooks(model) == _hooks(twin)
    sd, sd_twin = model.state_dict(), twin.state_dict()
    assert sd.keys() == sd_twin.keys() and all(torch.equal(sd[k], sd_twin[k]) for k in sd)
    assert model.config.to_dict() == twin.config.to_dict()
    for (name, m), (_, t) in zip(model.named_modules(), twin.named_modules()):
        assert set(vars(m)) == set(vars(t)), name
        assert type(m).forward is type(t).forward and "forward" not in vars(m), name


def test_bad_input_gives_clear_errors(models):
    model = models["siglip-llama"]
    ids, mask = llava_prompt([1, 2], N, model.config.image_token_id, [4, 6])
    px = _images(3)
    for ratio in (0, 1.5, -0.1, float("nan"), True):
        with pytest.raises(ValueError, match="ratio"):
            VisualTokenPruner(model, "evtp", ratio)
    pruner = VisualTokenPruner(model, "evtp", 0.5)
    with pytest.raises(ValueError, match="ratio must be in"):
        pruner(ids, px, mask, ratio=[0.5, 0.0])
    with pytest.raises(ValueError, match="one per sample"):
        pruner(ids, px, mask, ratio=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="images missing: sample 1"):
        pruner(ids, px[:2], mask)
    with pytest.raises(ValueError, match="placeholders for 3"):
        pruner(ids, _images(4), mask)
    with pytest.raises(ValueError, match="not a multiple"):
        pruner(torch.cat([ids, torch.full((2, 1), model.config.image_token_id)], 1), px,
               torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1))
    with pytest.raises(ValueError, match="unknown selection method|selection method"):
        VisualTokenPruner(model, "nope", 0.5)
    with pytest.raises(ValueError, match="no option"):
        VisualTokenPruner(model, "evtp", 0.5, bogus=1)
    with pytest.raises(ValueError, match="padding_side"):
        VisualTokenPruner(model, "evtp", 0.5, padding_side="middle")
    with pytest.raises(ValueError, match="pixel_values must be"):
        pruner(ids, px[0], mask)
    with pytest.raises(ValueError, match="LlavaForConditionalGeneration has no video tower"):
        pruner(ids, px, mask, pixel_values_videos=px[None])
    with pytest.raises(ValueError, match="labels are not supported"):
        pruner(ids, px, mask, labels=ids)


def test_unsupported_family_names_the_supported_ones():
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, vocab_size=20))
    with pytest.raises(ValueError, match="LlamaForCausalLM is not supported.*LlavaForConditionalGeneration"):
        VisualTokenPruner(text_only)


def test_not_covered_family_says_why():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=64,
                                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
                        vision_config=dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2))
    with pytest.raises(ValueError, match="image_grid_thw.*supported: LlavaForConditionalGeneration"):
        VisualTokenPruner(Qwen2VLForConditionalGeneration(cfg))


def test_a_kept_cls_token_is_never_pruned():
    """CLIP under the "full" strategy hands the CLS to the LLM: it stays, K patches are selected beside it."""
    from transformers import LlavaForConditionalGeneration

    from patchprune.hf import tiny_llava_config

    config = tiny_llava_config("llama", "clip")
    config.vision_feature_select_strategy = "full"
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    ids, mask = llava_prompt([1, 2], N + 1, model.config.image_token_id, [4, 6])
    px = _images(3, seed=6)
    pruner = VisualTokenPruner(model, "evtp", 0.25)
    with torch.no_grad():
        full = model.get_image_features(pixel_values=px).pooler_output
        inp = pruner.prepare(ids, px, mask)
        dense = model(input_ids=ids, attention_mask=mask, pixel_values=px).logits
        same = VisualTokenPruner(model, "evtp", 1.0)(ids, px, mask).logits
    k = budget(N, 0.25)
    assert ((inp.input_ids == model.config.image_token_id).sum(1)).tolist() == [k + 1, 2 * (k + 1)]
    for i in range(3):
        assert torch.equal(inp.features[i][0], full[i][0])  # the CLS, first
        assert torch.equal(inp.features[i][1:], full[i][1:][inp.index[i]])
    assert torch.equal(dense, same)


# ---- positions="dense": kept tokens keep their unpruned positions ------------------------------------


@pytest.mark.parametrize("name", ["siglip-llama", "video-llava"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_dense_positions_at_ratio_one_give_exactly_the_unwrapped_model(models, name, side):
    model = models[name]
    ids, mask = llava_prompt([1, 2], N, model.config.image_token_id, [5, 9], padding_side=side)
    px = _images(3)
    pruner = VisualTokenPruner(model, "evtp", 1.0, positions="dense")
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, pixel_values=px).logits
        assert torch.equal(pruner(ids, px, mask).logits, ref)
        if side == "left":
            gen = model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=3, do_sample=False)
            assert torch.equal(pruner.generate(ids, px, mask, max_new_tokens=3, do_sample=False), gen)


def test_dense_positions_are_the_kept_tokens_unpruned_positions(models):
    model = models["siglip-llama"]
    tok = model.config.image_token_id
    ids, mask = llava_prompt([2], N, tok, [6])  # 3 text, image, separator, image, separator, 3 text
    px = _images(2, seed=3)
    with torch.no_grad():
        inp = VisualTokenPruner(model, "kcenter", 0.25, positions="dense").prepare(ids, px, mask)
        compact = VisualTokenPruner(model, "kcenter", 0.25).prepare(ids, px, mask)
    k = budget(N, 0.25)
    first = int((ids[0] == tok).nonzero()[0])  # where image 0's placeholders start
    expected = list(range(first))  # the text before the first image
    expected += (first + inp.index[0]).tolist() + [first + N]  # image 0's kept slots, its separator
    expected += (first + N + 1 + inp.index[1]).tolist() + [first + 2 * N + 1]
    expected += list(range(first + 2 * N + 2, ids.shape[1]))  # the text after: not shifted
    assert inp.position_ids[0].tolist() == expected
    assert torch.equal(inp.input_ids, compact.input_ids) and compact.position_ids is None
    assert inp.input_ids.shape[1] == ids.shape[1] - 2 * (N - k)
    with torch.no_grad():  # the positions change what the model computes
        assert not torch.allclose(model(**inp.model_kwargs()).logits, model(**compact.model_kwargs()).logits)


@pytest.mark.parametrize("name,side", [("siglip-llama", "right"), ("video-llava", "right")])
def test_dense_positions_batch_matches_each_sample_alone(models, name, side):
    model = models[name]
    ids, mask = llava_prompt([1, 2, 1], N, model.config.image_token_id, [4, 7, 11], padding_side=side, seed=3)
    px = _images(4, seed=1)
    ratios = [0.25, 0.5, 0.1]
    pruner = VisualTokenPruner(model, "evtp", 0.2, padding_side=side, positions="dense")
    with torch.no_grad():
        out = pruner(ids, px, mask, ratio=ratios).logits
        inp = pruner.prepare(ids, px, mask, ratio=ratios)
        for b, (lo, n_img) in enumerate([(0, 1), (1, 2), (3, 1)]):
            alone = pruner(ids[b][mask[b].bool()][None], px[lo:lo + n_img], ratio=ratios[b]).logits[0]
            real = inp.attention_mask[b].bool()
            assert torch.allclose(out[b][real], alone, atol=1e-5)


def test_dense_positions_generate_matches_each_sample_alone(models):
    model = models["siglip-llama"]
    ids, mask = llava_prompt([1, 2], N, model.config.image_token_id, [4, 9], padding_side="left", seed=7)
    px = _images(3, seed=4)
    pruner = VisualTokenPruner(model, "evtp", 0.25, padding_side="left", positions="dense")
    with torch.no_grad():
        inp = pruner.prepare(ids, px, mask, generate=True)
        gen = pruner.generate(ids, px, mask, max_new_tokens=3, do_sample=False)
        # generate's first new token is the forward's argmax at the last prompt position, same positions
        first = model(**inp.model_kwargs()).logits[:, -1].argmax(-1)
        samples = [(ids[b][mask[b].bool()][None], px[sl]) for b, sl in ((0, slice(0, 1)), (1, slice(1, 3)))]
        alone = [pruner.generate(i, x, max_new_tokens=3, do_sample=False) for i, x in samples]
        prompts = [pruner.prepare(i, x, generate=True).input_ids.shape[1] for i, x in samples]
    width = inp.input_ids.shape[1]
    assert torch.equal(gen[:, width], first)
    for b in range(2):  # same new tokens as the sample alone (generation may stop early at EOS)
        new = alone[b][0, prompts[b]:]
        assert new.numel() >= 1 and torch.equal(gen[b, width:width + new.numel()], new)
    real = inp.attention_mask.bool()
    assert (inp.position_ids[~real] == 0).all() and (inp.position_ids[real] >= 0).all()


def test_video_placeholders_keep_their_frame_offsets(models):
    model = models["video-llava"]
    frames = 8
    ids = torch.cat([torch.tensor([[3, 4]]), torch.full((1, frames * (N + 1)), model.config.video_token_id),
                     torch.tensor([[5, 6, 7]])], 1)
    videos = torch.randn(1, frames, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        inp = VisualTokenPruner(model, "kcenter", 0.25, positions="dense").prepare(ids, pixel_values_videos=videos)
    k = budget(N, 0.25)
    assert inp.video_keep_counts.tolist() == [k] * frames
    expected = [0, 1]
    for f in range(frames):  # each frame: its CLS, then its kept patches, at the frame's unpruned slots
        start = 2 + f * (N + 1)
        expected += [start] + (start + 1 + _video_index(model, videos, f, k)).tolist()
    expected += [2 + frames * (N + 1) + i for i in range(3)]  # the text after the video: not shifted
    assert inp.position_ids[0].tolist() == expected


def _video_index(model, videos, f, k):
    """kcenter's picks on frame f alone (the CLS excluded), as the pruner makes them per frame."""
    pruner = VisualTokenPruner(model, "kcenter", 0.25)
    with torch.no_grad():
        feats = pruner.encode_videos(videos)
        return select(feats.vision[f:f + 1, feats.prefix:], k, "kcenter", (4, 4)).index[0]


def test_dense_positions_errors(models):
    model = models["siglip-llama"]
    with pytest.raises(ValueError, match="positions must be one of"):
        VisualTokenPruner(model, "evtp", 0.5, positions="gapped")
    ids, mask = llava_prompt([1], N, model.config.image_token_id, [4])
    with pytest.raises(ValueError, match="position_ids are built for the pruned prompt"):
        VisualTokenPruner(model, "evtp", 0.5)(ids, _images(1), mask, position_ids=torch.arange(ids.shape[1])[None])
