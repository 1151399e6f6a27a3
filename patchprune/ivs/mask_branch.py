"""The never-pruned mask branch: timm ViT -> simple pyramid -> HF Mask2Former pixel decoder and
masked-attention decoder, whose query content comes from the language model's <seg> states.

The HF parts are built from the VIS model's config helper (`patchprune.vis.head.mask2former_config`)
and initialised by `init_head`; the decoder is driven here (as `vis.head.Mask2FormerHead` does) so that
its query content is ours instead of the module's learned `queries_features` (its learned positional
query embedding is kept, as InstructSeg does).
"""
from __future__ import annotations

from dataclasses import dataclass

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from transformers.models.mask2former import modeling_mask2former as m2f

from patchprune.ivs.config import IVSConfig
from patchprune.vis.config import VISConfig
from patchprune.vis.head import init_head, mask2former_config
from patchprune.vis.pyramid import SimpleFeaturePyramid
from patchprune.vis.stem import embed_layer_kwargs


@dataclass
class PixelFeatures:
    """Pixel decoder output of the key frames: multi-scale maps (for the decoder), the coarsest map
    [B, fpn, h32, w32] (for the target perceiver) and the stride-4 mask features [B, fpn, H/4, W/4]."""

    multi_scale: list[Tensor]
    coarsest: Tensor
    mask_features: Tensor


def vis_config(cfg: IVSConfig) -> VISConfig:
    """The VIS config whose Mask2Former part has the IVS mask branch's shape."""
    return VISConfig(img_size=cfg.img_size, patch_size=cfg.patch_size, dim=cfg.mask_dim, depth=cfg.mask_depth,
                     heads=cfg.mask_heads, fpn_dim=cfg.fpn_dim, hidden_dim=cfg.hidden_dim,
                     decoder_layers=cfg.decoder_layers, decoder_heads=cfg.decoder_heads, decoder_ffn=cfg.decoder_ffn,
                     pixel_layers=cfg.pixel_layers, pixel_ffn=cfg.pixel_ffn, num_queries=cfg.seg_queries,
                     categories=[1]).validate()


class MaskBranch(nn.Module):
    """`pixels(images) -> PixelFeatures`; `decode(pix, content [B, N, hidden]) -> (mask logits per
    decoder layer [B, N, H/4, W/4], query states per layer [B, N, hidden])`."""

    def __init__(self, cfg: IVSConfig) -> None:
        super().__init__()
        vcfg = vis_config(cfg)
        hf = mask2former_config(vcfg)
        self.encoder = VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.mask_dim,
                                         depth=cfg.mask_depth, num_heads=cfg.mask_heads, class_token=False,
                                         global_pool="", num_classes=0, dynamic_img_size=True,
                                         **embed_layer_kwargs(cfg.mask_stem))
        self.pyramid = SimpleFeaturePyramid(cfg.mask_dim, cfg.fpn_dim, cfg.patch_size)
        self.pixel_decoder = m2f.Mask2FormerPixelDecoder(hf, feature_channels=[cfg.fpn_dim] * 4)
        self.transformer = m2f.Mask2FormerTransformerModule(in_features=cfg.fpn_dim, config=hf)
        self.transformer.queries_features.requires_grad_(False)  # our content replaces it
        init_head(self)

    def pixels(self, images: Tensor) -> PixelFeatures:
        B, _, H, W = images.shape
        tokens = self.encoder.forward_features(images)  # [B, N, C], no prefix
        p = self.encoder.patch_embed.patch_size[0]
        grid = tokens.transpose(1, 2).reshape(B, -1, H // p, W // p)
        pix = self.pixel_decoder(self.pyramid(grid))
        feats = list(pix.multi_scale_features)
        coarsest = min(feats, key=lambda f: f.shape[-2] * f.shape[-1])
        return PixelFeatures(feats, coarsest, pix.mask_features)

    def decode(self, pix: PixelFeatures, content: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        tm = self.transformer
        feats, pos, sizes = [], [], []
        for i, x in enumerate(pix.multi_scale[: tm.num_feature_levels]):
            sizes.append(x.shape[-2:])
            pos.append(tm.position_embedder(x.shape, x.device, x.dtype, None).flatten(2).permute(2, 0, 1))
            feats.append((tm.input_projections[i](x).flatten(2) + tm.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        B = content.shape[0]
        q_pos = tm.queries_embedder.weight.unsqueeze(1).repeat(1, B, 1)
        out = tm.decoder(inputs_embeds=content.transpose(0, 1), multi_stage_positional_embeddings=pos,
                         pixel_embeddings=pix.mask_features, encoder_hidden_states=feats,
                         query_position_embeddings=q_pos, feature_size_list=sizes, return_dict=True)
        states = [h.transpose(0, 1) for h in out.intermediate_hidden_states]
        return list(out.masks_queries_logits), states
