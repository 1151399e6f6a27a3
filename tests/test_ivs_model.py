"""The IVS model's parts: shapes and gradients, selection per frame with every method and ratio (K as
keep_count says, gathered, no NaN with K = 1), images and videos, tokenizer and config round trips."""
from __future__ import annotations

import math

import pytest
import torch

from patchprune.ivs.config import IVSConfig, named_config
from patchprune.ivs.model import COMPONENTS, IVSBatch, IVSModel
from patchprune.ivs.tokenizer import (IMAGE, PAD, SEG, SEG_SLOT, build_tokenizer, encode_prompt, load_tokenizer,
                                      save_tokenizer)
from patchprune.select import available_methods
from patchprune.tokens import keep_count

TEXTS = ["the red dotted star above the blue circle", "the largest object"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(TEXTS)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return IVSModel(named_config("micro", vocab_size=tok.get_vocab_size())).eval()


def make(tok, cfg: IVSConfig, video: bool, B: int = 2) -> IVSBatch:
    enc = [encode_prompt(tok, TEXTS[b % 2]) for b in range(B)]
    T = max(len(i) for i, _ in enc)
    ids = torch.zeros(B, T, dtype=torch.long)
    tm, rm = torch.zeros(B, T, dtype=torch.bool), torch.zeros(B, T, dtype=torch.bool)
    for b, (i, r) in enumerate(enc):
        ids[b, :len(i)], tm[b, :len(i)], rm[b, :len(r)] = torch.tensor(i), True, torch.tensor(r)
    S = cfg.img_size
    g = torch.Generator().manual_seed(1)
    refs = torch.randn(B, cfg.ref_frames, 3, S, S, generator=g) if video else None
    return IVSBatch(torch.randn(B, 3, S, S, generator=g), refs, ids, tm, rm)


def test_tokenizer_round_trip_and_save_load(tok, tmp_path) -> None:
    ids, refer = encode_prompt(tok, "The red star, above the blue circle")
    words = tok.decode(ids).split()
    assert "red" in words and "star" in words and SEG in tok.get_vocab()
    assert sum(refer) == len(tok.encode("the red star , above the blue circle", add_special_tokens=False).ids) + 1
    assert tok.token_to_id(PAD) == 0 and tok.token_to_id(IMAGE) is not None and tok.token_to_id(SEG_SLOT) is not None
    assert tok.encode("zebra", add_special_tokens=False).tokens == ["[UNK]"]
    save_tokenizer(tok, tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.get_vocab() == tok.get_vocab()
    assert again.encode(TEXTS[0]).ids == tok.encode(TEXTS[0]).ids
    with pytest.raises(ValueError, match="no words"):
        encode_prompt(tok, "   ")


def test_config_json_round_trip_and_errors(tmp_path) -> None:
    cfg = named_config("tiny", vocab_size=50)
    cfg.save(tmp_path)
    assert IVSConfig.load(tmp_path) == cfg
    with pytest.raises(ValueError, match="unknown IVS config field"):
        IVSConfig.from_json({**cfg.to_json(), "bogus": 1})
    with pytest.raises(ValueError, match="img_size"):
        named_config("tiny", img_size=100)
    with pytest.raises(ValueError, match="llm must be"):
        named_config("tiny", llm="gpt")
    with pytest.raises(FileNotFoundError, match="config.json"):
        IVSConfig.load(tmp_path / "nothing")


@pytest.mark.parametrize("video", [False, True])
def test_shapes_and_gradients_reach_every_part(tok, video: bool) -> None:
    torch.manual_seed(0)
    cfg = named_config("micro", vocab_size=tok.get_vocab_size())
    m = IVSModel(cfg).train()
    out = m(make(tok, cfg, video))
    assert len(out.mask_logits) == len(out.query_logits) == cfg.decoder_layers + 1
    assert out.mask_logits[-1].shape == (2, cfg.seg_queries, cfg.img_size // 4, cfg.img_size // 4)
    assert out.query_logits[-1].shape == (2, cfg.seg_queries)
    (sum(x.mean() for x in out.mask_logits) + sum(x.mean() for x in out.query_logits)).backward()
    for part in ("vision", "projector", "perceiver", "lm", "query_proj", "mask_branch", "target_head"):
        grads = [p.grad for p in getattr(m, part).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part
    assert m.seg_slots.grad is not None and m.seg_slots.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["dense", *available_methods()])
@pytest.mark.parametrize("ratio", [0.05, 0.2, 1.0])
def test_selection_keeps_k_per_frame(tok, model, method: str, ratio: float) -> None:
    cfg = model.config
    N = cfg.grid[0] * cfg.grid[1]
    for video in (False, True):
        calls: list[str] = []

        def meter(name):
            calls.append(name)
            import contextlib
            return contextlib.nullcontext()

        with torch.inference_mode():
            out = model(make(tok, cfg, video), method=method, ratio=ratio, meter=meter)
        k = N if method == "dense" or ratio == 1.0 else keep_count(N, ratio)
        assert out.kept_tokens == k and out.kept_index.shape == (2, k)
        assert out.kept_index.min() >= 0 and out.kept_index.max() < N
        assert all(torch.isfinite(x).all() for x in out.mask_logits + out.query_logits)
        assert calls == list(COMPONENTS)
        masks, scores = out.predict((cfg.img_size, cfg.img_size))
        assert masks.shape == (2, cfg.img_size, cfg.img_size) and masks.dtype == torch.bool
        assert torch.isfinite(scores).all()


def test_one_token_per_frame_is_finite(tok, model) -> None:
    cfg = model.config
    N = cfg.grid[0] * cfg.grid[1]
    ratio = 0.5 / N  # keep_count -> 1
    assert keep_count(N, ratio) == 1
    with torch.inference_mode():
        out = model(make(tok, cfg, True), method="evtp", ratio=ratio)
    assert out.kept_tokens == 1
    assert all(torch.isfinite(x).all() for x in out.mask_logits + out.query_logits)


def test_dense_equals_ratio_one_and_selection_changes_the_input(tok, model) -> None:
    b = make(tok, model.config, False)
    with torch.inference_mode():
        dense = model(b)
        full = model(b, method="evtp", ratio=1.0)
        pruned = model(b, method="evtp", ratio=0.2)
    assert torch.equal(dense.query_logits[-1], full.query_logits[-1])
    assert not torch.allclose(dense.query_logits[-1], pruned.query_logits[-1])


def test_predict_picks_the_best_scoring_query() -> None:
    from patchprune.ivs.model import IVSOutput

    masks = torch.full((1, 3, 4, 4), -10.0)
    masks[0, 1, :2, :2] = 10.0  # query 1: a confident 2 x 2 mask
    masks[0, 2, :, :] = 0.1  # query 2: everything, barely
    logits = torch.tensor([[5.0, 2.0, 5.0]])
    out = IVSOutput([masks], [logits], torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, 1), 1)
    pred, score = out.predict((8, 8))
    assert pred[0, :4, :4].all() and not pred[0, 4:, :].any() and not pred[0, :, 4:].any()
    assert math.isclose(float(score), float(torch.sigmoid(torch.tensor(2.0)) * torch.sigmoid(torch.tensor(10.0))),
                        rel_tol=1e-5)
    empty, _ = out.predict((8, 8), empty_below=0.95)
    assert not empty.any()


def test_phi_language_model_builds(tok) -> None:
    cfg = named_config("micro", vocab_size=tok.get_vocab_size(), llm="phi")
    m = IVSModel(cfg).eval()
    assert type(m.lm).__name__ == "PhiForCausalLM"
    with torch.inference_mode():
        out = m(make(tok, cfg, False))
    assert torch.isfinite(out.query_logits[-1]).all()


def test_from_pretrained_local_folders(tok, tmp_path) -> None:
    torch.manual_seed(0)
    cfg = named_config("micro", vocab_size=tok.get_vocab_size())
    m = IVSModel(cfg)
    m.vision.save_pretrained(tmp_path / "siglip")
    m.lm.save_pretrained(tmp_path / "llm")
    again = IVSModel(named_config("micro", vocab_size=tok.get_vocab_size(), vision_path=str(tmp_path / "siglip"),
                                  llm_path=str(tmp_path / "llm")))
    for a, b in zip(m.vision.state_dict().values(), again.vision.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(m.lm.get_input_embeddings().weight, again.lm.get_input_embeddings().weight)
    patch = cfg.patch_size // 2  # a tower of another grid than the saved one: refused, naming the field
    with pytest.raises(ValueError, match=f"vision_path .*patch_size {cfg.patch_size} \\(config wants {patch}\\)"):
        IVSModel(named_config("micro", vocab_size=tok.get_vocab_size(), vision_path=str(tmp_path / "siglip"),
                              vision_patch=patch))
    with pytest.raises(ValueError, match="llm_path .*hidden_size"):
        IVSModel(named_config("micro", vocab_size=tok.get_vocab_size(), llm_path=str(tmp_path / "llm"),
                              llm_dim=cfg.llm_dim * 2))


@pytest.mark.parametrize("prefix", [False, True])
def test_instruction_prefix_conditions_the_image_token_states(tok, prefix: bool) -> None:
    torch.manual_seed(0)
    cfg = named_config("micro", vocab_size=tok.get_vocab_size(), refer_map="tokens", instruction_prefix=prefix)
    m = IVSModel(cfg).eval()
    b = make(tok, cfg, False)
    b.key = b.key[:1].expand(2, -1, -1, -1)  # one image, the two instructions of TEXTS (different lengths)
    image = m.projector(m.encode(b.key, False)[0])
    temporal = torch.zeros(2, 0, cfg.llm_dim)
    with torch.no_grad():
        states, first = m._language(b, m.embed_words(b.text_ids), temporal, image)
        out = m(b)
    assert first == 2 + (b.text_ids.shape[1] if prefix else 0)
    tokens = states[:, first:first + image.shape[1]]
    assert torch.isfinite(out.refer_map).all() and torch.isfinite(out.query_logits[-1]).all()
    if prefix:  # each image token saw its sample's instruction
        assert not torch.allclose(tokens[0], tokens[1], atol=1e-4)
    else:  # causal order: the image precedes the text, so its states ignore it
        assert torch.allclose(tokens[0], tokens[1], atol=1e-5)


@pytest.mark.parametrize("method", ["kcenter", "tome"])
def test_pruned_tokens_keep_their_dense_positions(tok, model, method: str) -> None:
    """The language model sees the dense sequence's position ids: a kept image token its grid index,
    the text and <seg> slots after the image their dense positions (the model trains dense)."""
    batch = make(tok, model.config, video=False)
    seen: list[torch.Tensor] = []
    hook = model.lm.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["position_ids"].clone()), with_kwargs=True)
    try:
        with torch.no_grad():
            dense = model(batch)
            pruned = model(batch, method=method, ratio=0.25)
    finally:
        hook.remove()
    dense_pos, pruned_pos = seen
    N, K = model.config.grid[0] * model.config.grid[1], pruned.kept_tokens
    assert K < N and pruned_pos.shape[1] == dense_pos.shape[1] - (N - K)
    first = dense_pos.shape[1] - N - batch.text_ids.shape[1] - model.config.seg_queries  # first image token
    assert torch.equal(pruned_pos[:, :first], dense_pos[:, :first])
    assert torch.equal(pruned_pos[:, first:first + K], dense_pos[:, first:first + N].gather(1, pruned.kept_index))
    assert torch.equal(pruned_pos[:, first + K:], dense_pos[:, first + N:])  # text and <seg> slots
    assert torch.isfinite(dense.query_logits[-1]).all() and torch.isfinite(pruned.query_logits[-1]).all()


@pytest.mark.parametrize("video", [False, True])
def test_pruned_output_of_a_sample_does_not_depend_on_its_batch_padding(tok, model, video: bool) -> None:
    """Dense positions jump over pruned tokens; without an attention mask transformers would read the
    jumps as packed sequences and cut attention there. A batch that needs no padding (no mask) must
    give each sample what a padded batch gives it."""
    padded = make(tok, model.config, video)  # two instructions of different lengths: padded, masked
    same = IVSBatch(padded.key, padded.refs, padded.text_ids[[0, 0]], padded.text_mask[[0, 0]],
                    padded.refer_mask[[0, 0]])  # the longer instruction twice: nothing padded
    assert bool(same.text_mask.all()) and not bool(padded.text_mask.all())
    with torch.no_grad():
        a = model(same, method="kcenter", ratio=0.5)
        b = model(padded, method="kcenter", ratio=0.5)
    assert torch.allclose(a.query_logits[-1][0], b.query_logits[-1][0], atol=1e-4)
    assert torch.allclose(a.mask_logits[-1][0], b.mask_logits[-1][0], atol=1e-4)


@pytest.mark.parametrize("video", [False, True])
def test_vision_patch_gives_the_tower_its_own_grid(tok, video: bool) -> None:
    """vision_patch changes the tokens a method selects from (the tower's grid), not the mask branch."""
    torch.manual_seed(0)
    cfg = named_config("micro", vocab_size=tok.get_vocab_size(), refer_map="tokens", vision_patch=8)
    assert cfg.tower_patch == 8 and cfg.grid == (8, 8) and cfg.patch_size == 16
    m = IVSModel(cfg).eval()
    assert m.vision.config.patch_size == 8
    assert m.mask_branch.encoder.patch_embed.patch_size[0] == 16  # the mask branch keeps patch_size
    with torch.inference_mode():
        dense = m(make(tok, cfg, video))
        pruned = m(make(tok, cfg, video), method="evtp", ratio=0.1)
    assert dense.kept_tokens == 64 and pruned.kept_tokens == keep_count(64, 0.1) == 6
    assert int(pruned.kept_index.max()) < 64
    assert all(torch.isfinite(x).all() for x in pruned.mask_logits + pruned.query_logits)
    assert named_config("micro").grid == (4, 4)  # None: the tower uses patch_size
    with pytest.raises(ValueError, match="vision_patch must be"):
        named_config("micro", vision_patch=6)
