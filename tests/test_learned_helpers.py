"""Shared fixture for the learned-pruning tests (no tests here): a tiny 12-block timm ViT without CLS token."""
import torch
from timm.models.vision_transformer import VisionTransformer


def tiny_vit(dim: int = 48, img: int = 48, patch: int = 8, cls: bool = False, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=img, patch_size=patch, embed_dim=dim, depth=12, num_heads=2, mlp_ratio=2.0,
                             class_token=cls, global_pool="token" if cls else "", num_classes=0,
                             dynamic_img_size=True)


class PolicyAttentionLeak:
    """Records, per forward call of a runner in masking execution, the policy-attention leak: for each
    block that ran with a policy bias, the largest attention mass a kept query gave the pruned keys.
    The deviation of masking from gather execution at equal hard masks is bounded by these leaks
    (see patchprune.vit.policy_attention_bias); tests use their sum as the tolerance."""

    def __init__(self, vit) -> None:
        self.blocks: list[float] = []
        self.hooks = [b.register_forward_pre_hook(self._hook, with_kwargs=True) for b in vit.blocks]

    def _hook(self, block, args, kwargs) -> None:
        from patchprune.vit import block_attention

        bias = kwargs.get("attn_mask")
        if bias is None:
            return
        with torch.no_grad():
            attn = block_attention(block, args[0], bias)  # [B, heads, n, n]
            kept = (bias[:, 0] > -1).sum(1) > 1  # key j is kept iff a query other than j sees it
            leak = (attn * (~kept)[:, None, None, :]).sum(-1).masked_fill(~kept[:, None, :], 0)
        self.blocks.append(float(leak.max()))

    def take(self) -> float:
        """Sum of the leaks recorded since the last call."""
        total, self.blocks = sum(self.blocks), []
        return total

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
