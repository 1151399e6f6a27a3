"""Analytic cost of a LLaVA-style MLLM per component: vision tower, selector, projector, LLM prefill.

Convention: **MACs** (multiply-accumulates of the matrix products; 1 MAC = 2 FLOPs). Norms,
activations, softmax, rotary embeddings and biases are omitted, as in the EVTP paper and
`torch.utils.flop_counter` (which counts only matmul-type ops). The EVTP paper's "TFLOPs" are these
MACs: with InstructSeg's Phi-2 / SigLIP-so400m numbers (`instructseg_spec`, `paper_totals`) the dense
totals come out at 2.379 T (image; paper 2.376) and 10.24 T (4-frame video; paper 9.6).

Per transformer layer on n tokens (hidden d, query width d_q = heads * head_dim, key/value width d_kv,
FFN width m with 2 matrices, or 3 when gated):
    n (d d_q + 2 d d_kv + d_q d) + 2 n^2 d_q + mats n d m
which is the paper's 4 n d^2 + 2 n^2 d + 2 n d m for plain multi-head attention and a 2-matrix MLP.
By default attention is counted for the full n x n (causal kernels included), as FlopCounterMode
counts SDPA and as the paper does. `causal=True` counts only the products a causal kernel needs
(query i against keys 0..i: n (n + 1) / 2 pairs, so 2 n^2 d_q becomes n (n + 1) d_q). That is the
tighter physical limit of a language-model prefill whose SDPA runs with `is_causal=True` (the CPU
flash kernel skips the blocks above the diagonal: measured 0.62 of the full n x n time at 2,952
tokens, docs/benchmarks.md); the vision tower is never causal.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

COMPONENTS = ("vision", "selector", "projector", "prefill")


@dataclass(frozen=True)
class TransformerSpec:
    """Shape of a transformer stack (the vision tower or the language model)."""

    layers: int
    hidden: int
    ffn: int
    heads: int = 1
    kv_heads: int | None = None  # None: as many as query heads (multi-head attention)
    head_dim: int | None = None  # None: hidden // heads
    ffn_mats: int = 2  # 2 for a plain MLP, 3 for a gated (SwiGLU) one

    def layer_macs(self, n: float, causal: bool = False) -> float:
        """MACs of one layer on a sequence of n tokens (causal: attention over each query's prefix only)."""
        d = self.hidden
        hd = self.head_dim or d // self.heads
        dq, dkv = self.heads * hd, (self.kv_heads or self.heads) * hd
        pairs = n * (n + 1) / 2 if causal else n * n  # query-key pairs of q k^T (and of the weights times v)
        return n * (d * dq + 2 * d * dkv + dq * d) + 2 * pairs * dq + self.ffn_mats * n * d * self.ffn

    def macs(self, n: float, causal: bool = False) -> float:
        """MACs of the whole stack on one sequence of n tokens."""
        return self.layers * self.layer_macs(n, causal)


@dataclass(frozen=True)
class MLLMSpec:
    """A LLaVA-style model: vision tower -> (selector) -> projector -> language model."""

    vision: TransformerSpec
    llm: TransformerSpec
    tokens_per_frame: int  # N patch tokens per frame (729 for SigLIP-so400m at 384 px)
    patch_macs: int = 0  # patch embedding MACs per token (channels * patch^2 * width); 0 omits it
    projector_hidden: int | None = None  # 2-layer MLP width (None: the LLM width); 0: no projector counted
    vocab: int = 0  # lm_head width; its cost is counted for `lm_head_tokens` positions per sample
    lm_head_tokens: int = 1  # logits computed in prefill (1 = last position, as generate does)
    vision_prefix: int = 0  # extra tokens the tower runs on (CLIP's CLS)
    pool_head: bool = False  # SigLIP's attention-pooling head runs after the tower (1 probe query)


@dataclass(frozen=True)
class MLLMCost:
    """MACs per component for one call (all samples, all frames); `.flops` doubles them."""

    vision: float
    selector: float
    projector: float
    prefill: float

    @property
    def total(self) -> float:
        return self.vision + self.selector + self.projector + self.prefill

    def as_dict(self, unit: float = 1.0) -> dict[str, float]:
        """MACs per component and the total, divided by `unit` (1e12 for T)."""
        out = {k: v / unit for k, v in asdict(self).items()}
        out["total"] = self.total / unit
        return out

    def flops(self) -> dict[str, float]:
        """The same in FLOPs (2 per MAC)."""
        return {k: 2 * v for k, v in self.as_dict().items()}


def selector_macs(method: str, n: int, k: int, dim: int, vision: TransformerSpec | None = None) -> float:
    """Approximate MACs of selecting k of n tokens of width dim in one frame (see docs/hf.md).

    Farthest-first (evtp, kcenter): n k (dim + 2); divprune: n^2 dim (its first pick compares all
    pairs); random: 0; attention-based (attention, vispruner, visionzip): the scoring layer's q and k
    for n tokens plus q k^T (2 n dv^2 + n^2 dv), plus n k dim for vispruner's / visionzip's
    similarity steps; tome: one bipartite similarity (n_t / 2)^2 dim per merge round.
    """
    if k >= n or method == "random":
        return 0.0
    if method in ("evtp", "kcenter"):
        return float(n * k * (dim + 2))
    if method == "divprune":
        return float(n * n * dim)
    if method == "tome":
        total, nt = 0.0, n
        while nt > k:
            total += (nt // 2) * (nt - nt // 2) * dim
            nt -= min(nt - k, nt // 2)
        return total
    if method in ("attention", "vispruner", "visionzip"):
        dv = vision.hidden if vision is not None else dim
        extra = 0 if method == "attention" else n * k * dim
        return float(2 * n * dv * dv + n * n * dv + extra)
    raise ValueError(f"no cost model for method {method!r}; known: evtp, kcenter, divprune, random, tome, "
                     "attention, vispruner, visionzip")


def mllm_macs(spec: MLLMSpec, text_tokens: int, frames: int = 1, kept: int | None = None, *, batch: int = 1,
              method: str = "evtp", project_kept: bool = False, causal: bool = False) -> MLLMCost:
    """MACs of one prefill call: `batch` samples, each `frames` frames and `text_tokens` other tokens.

    kept: visual tokens per frame reaching the LLM (None = all N, dense: no selector cost).
    project_kept: True when selection happens before the projector (the EVTP paper); False when the
    projector runs on all N tokens first (our Hugging Face wrapper: `get_image_features` projects).
    causal: count the prefill's attention over each query's prefix only (see the module docstring).
    """
    N = spec.tokens_per_frame
    k = N if kept is None else int(kept)
    if not 1 <= k <= N:
        raise ValueError(f"kept must be in [1, {N}] (tokens per frame), got {kept}")
    if frames < 1 or batch < 1 or text_tokens < 0:
        raise ValueError("frames and batch must be >= 1 and text_tokens >= 0")
    n_frames = batch * frames
    nv, dv = N + spec.vision_prefix, spec.vision.hidden
    head = (2 * nv * dv * dv + 2 * dv * dv + 2 * nv * dv + 2 * dv * spec.vision.ffn) if spec.pool_head else 0
    vision = n_frames * (spec.vision.macs(nv) + N * spec.patch_macs + head)
    selector = 0.0 if kept is None else n_frames * selector_macs(method, N, k, spec.vision.hidden, spec.vision)
    d = spec.llm.hidden
    ph = d if spec.projector_hidden is None else spec.projector_hidden
    projected = k if project_kept else N
    projector = 0.0 if ph == 0 else n_frames * projected * (spec.vision.hidden * ph + ph * d)
    n = text_tokens + frames * k
    prefill = batch * (spec.llm.macs(n, causal) + spec.lm_head_tokens * spec.vocab * d)
    return MLLMCost(vision=float(vision), selector=float(selector), projector=float(projector), prefill=float(prefill))


# ------------------------------------------------------------------------------------------------
# The EVTP paper's setting and a Hugging Face LLaVA config


# The EVTP paper's token counts (its Table 5): text tokens per benchmark; fixed = 30 extra tokens
# (system prompt, [SEG], ...) is our reading: the equation was lost in extraction, and 30 makes the
# image total match; the video total then follows with no further freedom.
PAPER_FIXED_TOKENS = 30
PAPER_TOTALS_T = {"image": 2.376, "video": 9.6}


def instructseg_spec() -> MLLMSpec:
    """InstructSeg as counted by the EVTP paper: Phi-2 (32 x 2560, FFN 10240) + SigLIP-so400m (27 x 1152,
    FFN 4304, 729 tokens); patch embedding, projector and lm_head omitted, as in the paper's formula."""
    return MLLMSpec(vision=TransformerSpec(layers=27, hidden=1152, ffn=4304, heads=16),
                    llm=TransformerSpec(layers=32, hidden=2560, ffn=10240, heads=32),
                    tokens_per_frame=729, patch_macs=0, projector_hidden=0, vocab=0, lm_head_tokens=0)


def paper_totals(kept: int | None = None) -> dict[str, MLLMCost]:
    """The paper's image (RefCOCO: 15 text tokens, 1 frame) and video (Ref-YouTube-VOS: 20, 4 frames) cases."""
    spec = instructseg_spec()
    return {"image": mllm_macs(spec, 15 + PAPER_FIXED_TOKENS, 1, kept, project_kept=True),
            "video": mllm_macs(spec, 20 + PAPER_FIXED_TOKENS, 4, kept, project_kept=True)}


def spec_from_llava_config(config: Any) -> MLLMSpec:
    """MLLMSpec of a transformers LlavaConfig (SigLIP / CLIP tower; Llama / Qwen2-style gated LLM)."""
    vc, tc = config.vision_config, config.text_config
    side = vc.image_size // vc.patch_size
    prefix = 1 if vc.model_type.startswith("clip") else 0  # CLIP towers run on a CLS token too
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    return MLLMSpec(
        vision=TransformerSpec(layers=vc.num_hidden_layers, hidden=vc.hidden_size, ffn=vc.intermediate_size,
                               heads=vc.num_attention_heads),
        llm=TransformerSpec(layers=tc.num_hidden_layers, hidden=tc.hidden_size, ffn=tc.intermediate_size,
                            heads=tc.num_attention_heads, kv_heads=getattr(tc, "num_key_value_heads", None),
                            head_dim=head_dim, ffn_mats=3),
        tokens_per_frame=side * side, patch_macs=vc.num_channels * vc.patch_size ** 2 * vc.hidden_size,
        projector_hidden=tc.hidden_size, vocab=tc.vocab_size, lm_head_tokens=1, vision_prefix=prefix,
        pool_head=bool(getattr(vc, "vision_use_head", False)))
