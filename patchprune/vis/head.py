"""Mask2Former head from Hugging Face parts: pixel decoder + masked-attention decoder + our class head.

`Mask2FormerPixelDecoder` and `Mask2FormerTransformerModule` come from
`transformers.models.mask2former.modeling_mask2former`; the HF backbone config is never
instantiated. The transformer module's own submodules (query embeddings, projections, decoder)
are driven here so that ROVIS can append track queries to the learned ones (positional embedding
zero), which the module's `forward` cannot take.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former import modeling_mask2former as m2f

from patchprune.vis.config import VISConfig


def mask2former_config(cfg: VISConfig) -> Mask2FormerConfig:
    """The HF config of the head (and of the set loss) for a `VISConfig`."""
    return Mask2FormerConfig(
        feature_size=cfg.fpn_dim, mask_feature_size=cfg.fpn_dim, hidden_dim=cfg.hidden_dim,
        encoder_layers=cfg.pixel_layers, encoder_feedforward_dim=cfg.pixel_ffn,
        decoder_layers=cfg.decoder_layers + 1,  # HF runs decoder_layers - 1 masked-attention layers
        num_attention_heads=cfg.decoder_heads, dim_feedforward=cfg.decoder_ffn, num_queries=cfg.num_queries,
        num_labels=cfg.num_labels, train_num_points=cfg.points, no_object_weight=0.1, class_weight=2.0,
        mask_weight=5.0, dice_weight=5.0, use_auxiliary_loss=True, feature_strides=[4, 8, 16, 32],
        common_stride=4,
    )


@dataclass
class HeadOutput:
    """Per decoder layer (first = before any layer, as Mask2Former supervises it):
    class_logits [B, Q, K+1] and mask_logits [B, Q, H/4, W/4]; queries: last-layer normalised
    query embeddings [B, Q, D] (MinVIS matches on them); hidden: last-layer raw outputs [B, Q, D]
    (ROVIS's next track queries); semantic_logits: the per-pixel category map [B, K+1, H/4, W/4]
    (channel K = background) when the config has a semantic head, else None."""

    class_logits: list[Tensor]
    mask_logits: list[Tensor]
    queries: Tensor
    hidden: Tensor
    semantic_logits: Tensor | None = None

    def sample(self, b: int) -> "HeadOutput":
        """The outputs of sample b alone (batch dimension kept)."""
        sem = None if self.semantic_logits is None else self.semantic_logits[b:b + 1]
        return HeadOutput([c[b:b + 1] for c in self.class_logits], [m[b:b + 1] for m in self.mask_logits],
                          self.queries[b:b + 1], self.hidden[b:b + 1], sem)


def mask_pooled_logits(semantic_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """Average of the per-pixel category logits [B, K+1, h, w] under each query's soft mask
    [B, Q, h, w] -> [B, Q, K+1]. The mask weights are detached: the class loss teaches the category
    map and the query, never moves the masks."""
    weight = mask_logits.detach().sigmoid()
    pooled = torch.einsum("bqhw,bkhw->bqk", weight, semantic_logits)
    return pooled / weight.sum((-2, -1)).unsqueeze(-1).clamp_min(1.0)


def init_head(module: nn.Module) -> None:
    """Initialise the HF parts the way Mask2Former does (their constructors leave `level_embed`
    uninitialised and the deformable sampling offsets at random)."""
    for sub in module.modules():
        if isinstance(sub, m2f.Mask2FormerPixelDecoder):
            nn.init.normal_(sub.level_embed)
        elif isinstance(sub, m2f.Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
            nn.init.zeros_(sub.sampling_offsets.weight)
            angles = torch.arange(sub.n_heads, dtype=torch.float32) * (2 * math.pi / sub.n_heads)
            dirs = torch.stack([angles.cos(), angles.sin()], -1)
            dirs = dirs / dirs.abs().max(-1, keepdim=True).values
            ring = torch.arange(1, sub.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
            offsets = dirs.view(sub.n_heads, 1, 1, 2) * ring
            with torch.no_grad():
                sub.sampling_offsets.bias.copy_(offsets.expand(sub.n_heads, sub.n_levels, sub.n_points, 2).reshape(-1))
            nn.init.zeros_(sub.attention_weights.weight)
            nn.init.zeros_(sub.attention_weights.bias)
            for lin in (sub.value_proj, sub.output_proj):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
        elif isinstance(sub, m2f.Mask2FormerMaskedAttentionDecoderLayer):
            for p in sub.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            nn.init.zeros_(sub.cross_attn.in_proj_bias)
        elif isinstance(sub, m2f.Mask2FormerTransformerModule):
            for proj in sub.input_projections:
                if isinstance(proj, nn.Conv2d):
                    nn.init.xavier_uniform_(proj.weight)
                    nn.init.zeros_(proj.bias)


class Mask2FormerHead(nn.Module):
    """Pyramid maps (strides 4, 8, 16, 32) -> per-layer class and mask logits."""

    def __init__(self, cfg: VISConfig) -> None:
        super().__init__()
        hf = mask2former_config(cfg)
        self.pixel_decoder = m2f.Mask2FormerPixelDecoder(hf, feature_channels=[cfg.fpn_dim] * 4)
        self.transformer = m2f.Mask2FormerTransformerModule(in_features=cfg.fpn_dim, config=hf)
        self.class_head = nn.Linear(cfg.hidden_dim, cfg.num_labels + 1)
        # a 1x1 conv on the stride-4 mask features: every pixel gets a category (docs/vis.md)
        self.semantic = nn.Conv2d(cfg.fpn_dim, cfg.num_labels + 1, 1) if cfg.semantic_head else None
        init_head(self)

    def forward(self, pyramid: list[Tensor], track_queries: Tensor | None = None) -> HeadOutput:
        """pyramid: 4 maps high -> low resolution. track_queries [B, E, D] (ROVIS): appended after
        the learned queries with a zero positional embedding."""
        pix = self.pixel_decoder(pyramid)
        tm = self.transformer
        feats, pos, sizes = [], [], []
        for i, x in enumerate(pix.multi_scale_features[: tm.num_feature_levels]):
            sizes.append(x.shape[-2:])
            pos.append(tm.position_embedder(x.shape, x.device, x.dtype, None).flatten(2).permute(2, 0, 1))
            feats.append((tm.input_projections[i](x).flatten(2) + tm.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        B = pyramid[0].shape[0]
        q_pos = tm.queries_embedder.weight.unsqueeze(1).repeat(1, B, 1)  # copies, never views of parameters
        q_feat = tm.queries_features.weight.unsqueeze(1).repeat(1, B, 1)
        if track_queries is not None and track_queries.shape[1]:
            tq = track_queries.transpose(0, 1)
            q_feat = torch.cat([q_feat, tq], 0)
            q_pos = torch.cat([q_pos, torch.zeros_like(tq)], 0)
        out = tm.decoder(inputs_embeds=q_feat, multi_stage_positional_embeddings=pos,
                         pixel_embeddings=pix.mask_features, encoder_hidden_states=feats,
                         query_position_embeddings=q_pos, feature_size_list=sizes, return_dict=True)
        states = [h.transpose(0, 1) for h in out.intermediate_hidden_states]
        masks = list(out.masks_queries_logits)
        classes = [self.class_head(h) for h in states]
        semantic = None
        if self.semantic is not None:
            semantic = self.semantic(pix.mask_features)
            classes = [c + mask_pooled_logits(semantic, m) for c, m in zip(classes, masks)]
        return HeadOutput(class_logits=classes, mask_logits=masks, queries=states[-1],
                          hidden=out.last_hidden_state, semantic_logits=semantic)
