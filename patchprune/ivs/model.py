"""InstructSeg at laptop scale: SigLIP tower -> per-frame selection of K tokens -> MLP projector ->
causal LM over [<temporal> perceiver tokens; <image> tokens; instruction + [SEG]; answer; N <seg>
slots] -> <seg> states become Mask2Former queries of a never-pruned mask branch; the target head
picks the referred query.

Every part is a Hugging Face / timm class or a small module of ours: `SiglipVisionModel`,
`AutoModelForCausalLM.from_config(LlamaConfig | PhiConfig)` (or `from_pretrained` of local folders),
timm `VisionTransformer`, HF `Mask2FormerPixelDecoder` / `Mask2FormerTransformerModule`. The
language model is fed `inputs_embeds` (one forward, no generation); nothing is patched.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor, nn

from patchprune.ivs.config import IVSConfig
from patchprune.ivs.mask_branch import MaskBranch
from patchprune.ivs.perceiver import ObjectPerceiver
from patchprune.ivs.refer_map import ReferMap
from patchprune.ivs.target_head import TargetHead
from patchprune.ivs.tokenizer import IMAGE, SPECIAL_TOKENS, TEMPORAL
from patchprune.tokens import keep_count

IMAGE_MEAN = (0.5, 0.5, 0.5)  # SigLIP's normalisation
IMAGE_STD = (0.5, 0.5, 0.5)
COMPONENTS = ("vision", "selector", "projector", "perceiver", "llm", "mask_branch")
Meter = Callable[[str], ContextManager[Any]]


def normalise(frames: Tensor) -> Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1]."""
    if frames.shape[-1] != 3 or frames.dim() < 4:
        raise ValueError(f"frames must be uint8 [..., H, W, 3], got {tuple(frames.shape)}")
    x = frames.movedim(-1, -3).float() / 255.0
    return (x - 0.5) / 0.5


@dataclass
class IVSBatch:
    """One batch: key frames [B, 3, H, W] (normalised); refs [B, R, 3, H, W] or None (an image is
    its own reference frame); text_ids [B, T] (0-padded prompt ids, see `tokenizer.encode_prompt`);
    text_mask [B, T] True on real tokens; refer_mask [B, T] True on the <refer> span; frame_ids
    [B * (1 + R)] or None: one id per frame in the model's order (keys, then every key's references),
    equal ids for the same frame (a video's key frames are each other's references, and expressions
    of one image share it), so the vision tower runs once per distinct frame (`IVSModel.encode_distinct`)."""

    key: Tensor
    refs: Tensor | None
    text_ids: Tensor
    text_mask: Tensor
    refer_mask: Tensor
    frame_ids: Tensor | None = None

    def to(self, device: torch.device | str) -> "IVSBatch":
        """The batch on `device` (frames and token ids; batches are built on the CPU, `ivs.data.make_batch`)."""
        return IVSBatch(self.key.to(device), None if self.refs is None else self.refs.to(device),
                        self.text_ids.to(device), self.text_mask.to(device), self.refer_mask.to(device),
                        None if self.frame_ids is None else self.frame_ids.to(device))


def unique_frames(frame_ids: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """(first position of each distinct id [U], each position's distinct slot [F]) of frame ids [F], or
    None when every frame is distinct (or there are no ids): the tower then runs on frames[first]
    and its outputs are spread back with [inverse]."""
    if frame_ids is None:
        return None
    uniq, inverse = torch.unique(frame_ids, return_inverse=True)
    if uniq.numel() == frame_ids.numel():
        return None
    positions = torch.arange(frame_ids.numel(), device=frame_ids.device)
    first = torch.full_like(uniq, frame_ids.numel()).scatter_reduce(0, inverse, positions, "amin")
    return first, inverse


@dataclass
class IVSOutput:
    """mask_logits / query_logits per decoder layer (first = before any layer): [B, N, H/4, W/4] and
    [B, N]; kept_index [F, K] grid positions kept per key frame; vision [F, N, Dv] the key frames'
    tower features (coverage); kept_tokens: K per frame; refer_map [B, H/4, W/4] logits of the
    referring map (configs with `refer_map`, else None); class_logits per decoder layer [B, N, C + 1]
    of the instance loss's class head (training mode of configs with `instance_classes`, else None);
    query_states [B, N, hidden]: the last decoder layer's query states."""

    mask_logits: list[Tensor]
    query_logits: list[Tensor]
    kept_index: Tensor
    vision: Tensor
    kept_tokens: int
    refer_map: Tensor | None = None
    class_logits: list[Tensor] | None = None
    query_states: Tensor | None = None

    def predict(self, size: tuple[int, int], empty_below: float = 0.0) -> tuple[Tensor, Tensor]:
        """(masks bool [B, H, W], scores [B]): the top-1 query by sigmoid(logit) x mean mask probability
        inside its mask; empty when sigmoid(logit) of that query is below `empty_below`."""
        masks, logits = self.mask_logits[-1], self.query_logits[-1]
        prob = masks.sigmoid()
        inside = (prob > 0.5).float()
        mask_score = (prob * inside).flatten(2).sum(-1) / inside.flatten(2).sum(-1).clamp_min(1.0)
        score = logits.sigmoid() * mask_score
        best = score.argmax(1)
        rows = torch.arange(len(best), device=best.device)
        up = nn.functional.interpolate(masks[rows, best].unsqueeze(1), size=size, mode="bilinear", align_corners=False)
        pred = up.squeeze(1) > 0
        if empty_below > 0:
            pred = pred & (logits[rows, best].sigmoid() >= empty_below)[:, None, None]
        return pred, score[rows, best]


def build_vision_tower(cfg: IVSConfig) -> nn.Module:
    """`SiglipVisionModel`: from `cfg.vision_path` (local folder) or random with the config's shape."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    if cfg.vision_path:
        tower = SiglipVisionModel.from_pretrained(cfg.vision_path)
        _check_pretrained("vision_path", cfg.vision_path, tower.config, image_size=cfg.img_size,
                          patch_size=cfg.tower_patch, hidden_size=cfg.vision_dim)
        return tower
    return SiglipVisionModel(SiglipVisionConfig(
        hidden_size=cfg.vision_dim, intermediate_size=cfg.vision_ffn, num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads, image_size=cfg.img_size, patch_size=cfg.tower_patch,
        vision_use_head=False, attn_implementation="sdpa"))


def _check_pretrained(field: str, path: str, loaded: Any, **expected: int) -> None:
    """ValueError naming `field` when a model loaded from `path` disagrees with the IVS config on a
    size the rest of the model is built for (the token grid, the projector's widths)."""
    wrong = [f"{k} {getattr(loaded, k, None)} (config wants {v})" for k, v in expected.items()
             if getattr(loaded, k, None) != v]
    if wrong:
        raise ValueError(f"{field} {path}: the model there has " + ", ".join(wrong) + "; set the IVS config's sizes "
                         "to the pretrained model's (img_size, vision_patch, vision_dim, llm_dim)")


def build_language_model(cfg: IVSConfig) -> nn.Module:
    """A causal LM: from `cfg.llm_path` (local folder; embeddings resized to our vocabulary) or
    `AutoModelForCausalLM.from_config` of a Llama / Phi config with the config's shape."""
    from transformers import AutoModelForCausalLM, LlamaConfig, PhiConfig

    if cfg.llm_path:
        lm = AutoModelForCausalLM.from_pretrained(cfg.llm_path)
        _check_pretrained("llm_path", cfg.llm_path, lm.config, hidden_size=cfg.llm_dim)
        lm.resize_token_embeddings(cfg.vocab_size)
        return lm
    common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.llm_dim, intermediate_size=cfg.llm_ffn,
                  num_hidden_layers=cfg.llm_layers, num_attention_heads=cfg.llm_heads, max_position_embeddings=1024,
                  pad_token_id=0, bos_token_id=None, eos_token_id=None)
    hf_cfg = LlamaConfig(**common) if cfg.llm == "llama" else PhiConfig(**common)
    return AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="sdpa")


def _null(_: str) -> ContextManager[Any]:
    return contextlib.nullcontext()


class IVSModel(nn.Module):
    """`forward(batch, method="dense", ratio=1.0, meter=None, **options) -> IVSOutput`.

    method "dense" (or ratio 1) keeps all N tokens; any `patchprune.select` method keeps
    K = keep_count(N, ratio) tokens per frame (reference frames included), gathered (never masked).
    `meter(name)` (optional) wraps each component's work (timing / FLOP counting in `evaluate`).
    """

    def __init__(self, config: IVSConfig) -> None:
        super().__init__()
        self.config = cfg = config.validate()
        self.vision = build_vision_tower(cfg)
        self.lm = build_language_model(cfg)
        v_dim, l_dim = self.vision.config.hidden_size, self.lm.config.hidden_size
        self.projector = nn.Sequential(nn.Linear(v_dim, l_dim), nn.GELU(), nn.Linear(l_dim, l_dim))
        self.perceiver = ObjectPerceiver(l_dim, cfg.latents, cfg.perceiver_layers, cfg.perceiver_heads)
        self.seg_slots = nn.Parameter(torch.randn(cfg.seg_queries, l_dim) * 0.02)
        self.query_proj = nn.Linear(l_dim, cfg.hidden_dim)
        self.mask_branch = MaskBranch(cfg)
        self.target_head = TargetHead(l_dim, cfg.fpn_dim, cfg.hidden_dim, cfg.target_layers, cfg.decoder_heads)
        self.refer_map = None if cfg.refer_map == "none" else ReferMap(cfg.refer_map, l_dim, cfg.fpn_dim)
        # the auxiliary instance loss's classifier of every query (training only; `ivs.train`)
        self.class_head = nn.Linear(cfg.hidden_dim, cfg.instance_classes + 1) if cfg.instance_classes else None
        self.special = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}

    # -- vision side ---------------------------------------------------------------------------------
    def encode(self, frames: Tensor, need_attention: bool) -> tuple[Tensor, Tensor | None]:
        """frames [F, 3, H, W] -> tower features [F, N, Dv] (+ last layer's attention [F, heads, N, N])."""
        out = self.vision(pixel_values=frames, output_hidden_states=need_attention)
        attn = None
        if need_attention:
            from patchprune.hf.features import layer_attention

            attn = layer_attention(self.vision, out.hidden_states, -1)
        return out.last_hidden_state, attn

    def encode_distinct(self, frames: Tensor, frame_ids: Tensor | None, need_attention: bool
                        ) -> tuple[Tensor, Tensor | None]:
        """`encode` of frames [F, 3, H, W] running the tower once per distinct frame (`unique_frames`),
        its outputs spread back to all F rows. The tower is the dearest part that sees every frame (a
        video key frame's references are other key frames); the selection after it still runs on all
        F rows in their order, so seeded draws (random) pick as they did without the ids."""
        distinct = unique_frames(frame_ids)
        if distinct is None:
            return self.encode(frames, need_attention)
        first, inverse = distinct
        vision, attn = self.encode(frames[first], need_attention)
        return vision[inverse], None if attn is None else attn[inverse]

    def select(self, vision: Tensor, attn: Tensor | None, method: str, ratio: float, **options: Any
               ) -> tuple[Tensor, Tensor]:
        """Per frame K = keep_count(N, ratio) tokens: (tokens [F, K, Dv], grid index [F, K])."""
        F_, N, _ = vision.shape
        if method == "dense" or ratio >= 1.0:
            return vision, torch.arange(N, device=vision.device).expand(F_, N)
        from patchprune.hf.selection import select_visual_tokens  # the Hugging Face wrapper's step

        return select_visual_tokens(vision, keep_count(N, ratio), method, self.config.grid, attn, **options)

    def embed_words(self, ids: Tensor) -> Tensor:
        return self.lm.get_input_embeddings()(ids)

    # -- the whole model -----------------------------------------------------------------------------
    def forward(self, batch: IVSBatch, method: str = "dense", ratio: float = 1.0, meter: Meter | None = None,
                **options: Any) -> IVSOutput:
        meter = meter or _null
        B = batch.key.shape[0]
        frames = batch.key if batch.refs is None else torch.cat([batch.key, batch.refs.flatten(0, 1)], 0)
        need_attn = False
        if method != "dense" and ratio < 1.0:
            from patchprune.select.base import method_spec

            need_attn = method_spec(method).needs_attention
        with meter("vision"):
            vision, attn = self.encode_distinct(frames, batch.frame_ids, need_attn)
        with meter("selector"):
            kept, index = self.select(vision, attn, method, ratio, **options)
        with meter("projector"):
            tokens = self.projector(kept)  # [F, K, D]
        image_tokens = tokens[:B]
        ref_tokens = image_tokens if batch.refs is None else tokens[B:]
        R = 1 if batch.refs is None else batch.refs.shape[1]
        text = self.embed_words(batch.text_ids)
        with meter("perceiver"):
            text_r = text.repeat_interleave(R, 0)
            pad_r = (~batch.refer_mask).repeat_interleave(R, 0)
            temporal = self.perceiver(ref_tokens, text_r, pad_r).reshape(B, -1, text.shape[-1])
        with meter("llm"):
            states, first_image = self._language(batch, text, temporal, image_tokens, index[:B], vision.shape[1])
        N = self.config.seg_queries
        seg_states, text_states = states[:, -N:], states[:, -N - text.shape[1]:-N]
        image_states = states[:, first_image:first_image + image_tokens.shape[1]]
        refer = (text_states * batch.refer_mask.unsqueeze(-1)).sum(1) / batch.refer_mask.sum(1, keepdim=True).clamp_min(1)
        with meter("mask_branch"):
            pix = self.mask_branch.pixels(batch.key)
            masks, q_states = self.mask_branch.decode(pix, self.query_proj(seg_states))
            target = self.target_head.target(refer, pix.coarsest)
            logits = [self.target_head.logits(q, target) for q in q_states]
            refer_map = None
            if self.refer_map is not None:
                refer_map = self.refer_map(refer, image_states, index[:B], self.config.grid, pix.mask_features)
                logits = [lg + self.refer_map.pooled(refer_map, m) for lg, m in zip(logits, masks)]
            # the class head serves the instance loss only: inference does not pay for it
            classes = [self.class_head(q) for q in q_states] if self.class_head is not None and self.training else None
        return IVSOutput(masks, logits, index[:B], vision[:B], int(kept.shape[1]), refer_map, classes, q_states[-1])

    def _language(self, batch: IVSBatch, text: Tensor, temporal: Tensor, image: Tensor, index: Tensor | None = None,
                  tokens_per_frame: int | None = None) -> tuple[Tensor, int]:
        """(last hidden states [B, S, D], position of the first image token) of [<temporal>; perceiver;
        (instruction, with `instruction_prefix`); <image>; image tokens; text; <seg> slots].

        Position ids are the dense sequence's: a kept image token keeps its grid index (`index` [B, K],
        grid order) and everything after the image tokens keeps its dense position, as if all
        `tokens_per_frame` tokens were there (None: the image tokens are all there are). The model trains
        dense, and its rotary positions made pruned accuracy jump with K when the text moved closer
        (docs/ivs.md, "Fourteenth session")."""
        B, D = text.shape[0], text.shape[-1]
        marks = self.embed_words(torch.tensor([self.special[TEMPORAL], self.special[IMAGE]], device=text.device))
        seg = self.seg_slots.unsqueeze(0).expand(B, -1, -1)
        dev = text.device
        prefix = [text] if self.config.instruction_prefix else []
        prefix_mask = [batch.text_mask] if self.config.instruction_prefix else []
        embeds = torch.cat([marks[0].expand(B, 1, D), temporal, *prefix, marks[1].expand(B, 1, D), image, text, seg], 1)
        def real(n: int) -> Tensor:
            return torch.ones(B, n, dtype=torch.bool, device=dev)

        mask = torch.cat([real(1 + temporal.shape[1]), *prefix_mask, real(1 + image.shape[1]), batch.text_mask,
                          real(seg.shape[1])], 1)
        first_image = 2 + temporal.shape[1] + sum(t.shape[1] for t in prefix)
        position_ids = (mask.long().cumsum(1) - 1).clamp_min(0)
        K = image.shape[1]
        remapped = index is not None and tokens_per_frame is not None and K < tokens_per_frame
        if remapped:  # pruned: the dense positions (dense sequences are unchanged by this)
            start = position_ids[:, first_image:first_image + 1]
            position_ids = torch.cat([position_ids[:, :first_image], start + index.to(position_ids.dtype),
                                      position_ids[:, first_image + K:] + (tokens_per_frame - K)], 1)
        # An explicit mask whenever positions jump: without one, transformers reads position ids that do
        # not step by 1 as packed sequences and blocks attention between them.
        all_real = bool(mask.all()) and not remapped
        out = self.lm.get_decoder()(inputs_embeds=embeds, attention_mask=None if all_real else mask.long(),
                                    position_ids=position_ids, use_cache=False)
        return out.last_hidden_state, first_image
