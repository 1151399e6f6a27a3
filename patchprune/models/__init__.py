"""Dense prediction models built on timm ViTs (backbones the sparse ViT runner can prune)."""
