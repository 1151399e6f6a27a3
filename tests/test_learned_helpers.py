"""Shared fixture for the learned-pruning tests (no tests here): a tiny 12-block timm ViT without CLS token."""
import torch
from timm.models.vision_transformer import VisionTransformer


def tiny_vit(dim: int = 48, img: int = 48, patch: int = 8, cls: bool = False, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=img, patch_size=patch, embed_dim=dim, depth=12, num_heads=2, mlp_ratio=2.0,
                             class_token=cls, global_pool="token" if cls else "", num_classes=0,
                             dynamic_img_size=True)
