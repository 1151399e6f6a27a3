"""Analytic MLLM MACs: against FlopCounterMode on tiny LLaVA models, and the EVTP paper's dense totals."""
import pytest
import torch

from patchprune.hf import VisualTokenPruner, llava_prompt, tiny_llava
from patchprune.metrics import flops
from patchprune.metrics.mllm_flops import (PAPER_TOTALS_T, TransformerSpec, instructseg_spec, mllm_macs, paper_totals,
                                           selector_macs, spec_from_llava_config)

N = 16


def _close(a, b, tol=0.05):
    return abs(a - b) <= tol * b


@pytest.mark.parametrize("text,vision", [("llama", "siglip"), ("qwen2", "clip")])
def test_components_agree_with_flop_counter(text, vision):
    model = tiny_llava(text, vision)
    spec = spec_from_llava_config(model.config)
    base = model.model
    px = torch.randn(3, 3, 32, 32)
    cost = mllm_macs(spec, text_tokens=0, frames=1, batch=3)
    assert _close(cost.vision, flops(base.vision_tower, px).macs)
    feats = torch.randn(3, N, model.config.vision_config.hidden_size)
    assert _close(cost.projector, flops(base.multi_modal_projector, feats).macs)
    emb = torch.randn(2, 37, model.config.text_config.hidden_size)
    counted = flops(base.language_model, (), inputs_embeds=emb).macs + flops(model.lm_head, emb[:, -1:]).macs
    assert _close(mllm_macs(spec, text_tokens=37 - N, frames=1, batch=2).prefill, counted)


@pytest.mark.parametrize("ratio", [1.0, 0.25])
def test_whole_pruned_forward_agrees_with_flop_counter(ratio):
    """vision + projector + prefill of the model's own forward on the pruned prompt (2 frames per sample)."""
    model = tiny_llava("llama", "siglip")
    spec = spec_from_llava_config(model.config)
    ids, mask = llava_prompt([2, 2], N, model.config.image_token_id, [6, 6])  # equal lengths: no padding
    px = torch.randn(4, 3, 32, 32)
    pruner = VisualTokenPruner(model, "evtp", ratio)
    inp = pruner.prepare(ids, px, mask)
    k = int(inp.keep_counts[0])
    kwargs = inp.model_kwargs()
    kwargs.pop("mm_encoder_outputs")
    counted = flops(model, (), pixel_values=px, logits_to_keep=1, **kwargs) if ratio == 1.0 else None
    cost = mllm_macs(spec, text_tokens=ids.shape[1] - 2 * N, frames=2, kept=None if ratio == 1.0 else k, batch=2)
    if counted is not None:
        assert _close(cost.vision + cost.projector + cost.prefill, counted.macs)
    else:  # pruned: the language model part alone on the rebuilt prompt
        emb = model.get_input_embeddings()(inp.input_ids)
        lm = flops(model.model.language_model, (), inputs_embeds=emb).macs + flops(model.lm_head, emb[:, -1:]).macs
        assert inp.input_ids.shape[1] == 6 + 2 + 2 * k and _close(cost.prefill, lm)


def test_dense_totals_reproduce_the_evtp_paper_within_ten_percent():
    totals = paper_totals()
    assert _close(totals["image"].total / 1e12, PAPER_TOTALS_T["image"], 0.10)
    assert _close(totals["video"].total / 1e12, PAPER_TOTALS_T["video"], 0.10)
    assert abs(totals["image"].total / 1e12 - 2.376) < 0.01  # the image case pins the fixed token count


def test_pruning_lowers_prefill_and_counts_the_selector():
    spec = instructseg_spec()
    dense = mllm_macs(spec, 45, 4)
    pruned = [mllm_macs(spec, 45, 4, kept=k) for k in (146, 73, 36)]
    assert dense.selector == 0 and all(p.selector > 0 for p in pruned)
    assert dense.prefill > pruned[0].prefill > pruned[1].prefill > pruned[2].prefill
    assert pruned[0].vision == dense.vision
    assert pruned[0].flops()["total"] == 2 * pruned[0].total
    assert selector_macs("evtp", 729, 146, 1152) == 729 * 146 * 1154
    assert selector_macs("random", 729, 146, 1152) == 0


def test_transformer_spec_reduces_to_the_paper_formula():
    L, d, m, n = 32, 2560, 10240, 100
    assert TransformerSpec(L, d, m, heads=32).macs(n) == L * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_term_counts_the_products_of_each_query(causal):
    """The attention term equals what FlopCounterMode counts for attention written out query by query
    (every key, or with causal=True only the keys up to the query's own position)."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = TransformerSpec(layers=1, hidden=32, ffn=64, heads=4, kv_heads=2, ffn_mats=3)
    n, hd = 9, 8
    q, k, v = (torch.randn(1, 4, n, hd) for _ in range(3))
    with FlopCounterMode(display=False) as counter:
        for i in range(n):
            keys = i + 1 if causal else n
            w = (q[:, :, i:i + 1] @ k[:, :, :keys].transpose(-1, -2)).softmax(-1)
            w @ v[:, :, :keys]
    projections_and_mlp = spec.layer_macs(n) - 2 * n * n * 4 * hd  # the full convention's attention: 2 n^2 d_q
    assert spec.layer_macs(n, causal=causal) - projections_and_mlp == counter.get_total_flops() / 2
    assert spec.macs(n, causal=True) < spec.macs(n)


def test_causal_prefill_changes_only_the_language_model():
    spec = instructseg_spec()
    full, causal = mllm_macs(spec, 50, 4, kept=146), mllm_macs(spec, 50, 4, kept=146, causal=True)
    assert (causal.vision, causal.selector, causal.projector) == (full.vision, full.selector, full.projector)
    n = 50 + 4 * 146
    assert full.prefill - causal.prefill == spec.llm.layers * (n * n - n * (n + 1) / 2) * 2 * spec.llm.hidden


def test_bad_arguments():
    spec = instructseg_spec()
    with pytest.raises(ValueError, match="kept must be in"):
        mllm_macs(spec, 10, 1, kept=0)
    with pytest.raises(ValueError, match="frames and batch"):
        mllm_macs(spec, 10, 0)
    with pytest.raises(ValueError, match="no cost model"):
        selector_macs("nope", 10, 2, 4)
