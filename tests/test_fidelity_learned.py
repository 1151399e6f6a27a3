"""Fidelity of the learned methods' training path against references written here from the
published algorithms (issue 12, items 1-3): a masked block (hard key padding, gated residual),
DynamicViT's policy softmax with every token updated, TPS's squeeze without a gate on hosts, and
the authors' initialisations. The references use the timm blocks' weights, never the runner's code."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from patchprune.learned import MapSM, SM, DynamicViTStage, TPSStage, SViTSelector, build, squeeze
from patchprune.policies.base import Decision, Policy
from patchprune.vit import embed, sparse_vit


def small_vit(cls: bool, depth: int = 3, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2, mlp_ratio=2.0,
                            class_token=cls, global_pool="token" if cls else "", num_classes=0)
    with torch.no_grad():  # sharpen attention so masked and unmasked keys matter
        for b in vit.blocks:
            b.attn.qkv.weight.mul_(4.0)
    return vit.double()


# ---------------------------------------------------------------------------------------------
# Reference block, written from the published description (not the runner's code)


def ref_attention(blk, x, weight_fn):
    """Multi-head attention of a timm Block's weights; weight_fn(logits [B,H,n,n]) -> attention weights."""
    a = blk.attn
    h = F.layer_norm(x, x.shape[-1:], blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    B, n, C = h.shape
    qkv = h @ a.qkv.weight.T + a.qkv.bias
    q, k, v = qkv.reshape(B, n, 3, a.num_heads, C // a.num_heads).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-2, -1) / math.sqrt(C // a.num_heads)
    out = (weight_fn(logits) @ v).transpose(1, 2).reshape(B, n, C)
    return x + out @ a.proj.weight.T + a.proj.bias


def ref_mlp(blk, x):
    h = F.layer_norm(x, x.shape[-1:], blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    h = F.gelu(h @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
    return x + h @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias


def hard_key_padding(m, P):
    """Softmax where every query sees the prefix and the kept patches only (pruned queries too)."""
    keys = torch.cat([torch.ones(m.shape[0], P, dtype=torch.bool), m.detach() > 0.5], dim=1)

    def weights(logits):
        return logits.masked_fill(~keys[:, None, None, :], float("-inf")).softmax(-1)

    return weights


def dynamicvit_policy_softmax(m, P, eps=1e-6):
    """DynamicViT's softmax_with_policy, written literally: (e^{s-max} P + eps/N) / (sum + eps)."""
    policy = torch.cat([torch.ones(m.shape[0], P, dtype=m.dtype), m], dim=1)

    def weights(logits):
        n = logits.shape[-1]
        attn_policy = policy.reshape(-1, 1, 1, n)
        eye = torch.eye(n, dtype=logits.dtype).view(1, 1, n, n)
        attn_policy = attn_policy + (1.0 - attn_policy) * eye
        e = (logits - logits.max(dim=-1, keepdim=True)[0]).exp() * attn_policy
        return (e + eps / n) / (e.sum(dim=-1, keepdim=True) + eps)

    return weights


def st_mask(logits, hard):
    """Straight-through mask: forward `hard`, gradient of sigmoid(logits)."""
    soft = logits.sigmoid()
    return hard.to(soft.dtype) + soft - soft.detach()


class FixedMask(Policy):
    """Hands the runner a given straight-through mask (hard / gated form: VPP's and SViT's)."""

    def __init__(self, logits, hard):
        super().__init__()
        self.logits, self.hard = logits, hard

    def forward(self, ctx):
        return Decision(keep=st_mask(self.logits, self.hard))


class FixedMaskDynamicViT(DynamicViTStage):
    """DynamicViT's declared training form (policy softmax, no gate) with a given mask."""

    def __init__(self, logits, hard):
        super().__init__(32, 0.5)
        self.logits, self.hard = logits, hard

    def forward(self, ctx):
        return Decision(keep=st_mask(self.logits, self.hard))


def reference_forward(vit, images, pos, m, form):
    P = vit.num_prefix_tokens
    x = embed(vit, images)
    for blk in vit.blocks[:pos]:
        x = blk(x)
    for blk in vit.blocks[pos:]:
        if form == "hard":
            y = ref_mlp(blk, ref_attention(blk, x, hard_key_padding(m, P)))
            g = m.unsqueeze(-1)
            x = torch.cat([y[:, :P], g * y[:, P:] + (1 - g) * x[:, P:]], dim=1)
        else:  # DynamicViT: every token updated, the mask acts through attention only
            x = ref_mlp(blk, ref_attention(blk, x, dynamicvit_policy_softmax(m, P)))
    x = vit.norm(x)
    return x[:, P:]


def case(cls, seed, form):
    vit = small_vit(cls, seed=seed)
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    logits = torch.randn(2, 16, generator=g, dtype=torch.float64)
    hard = torch.rand(2, 16, generator=g) < 0.5
    hard[:, 0] = True
    return vit, images, logits, hard


@pytest.mark.parametrize("cls", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("form", ["hard", "policy"])
def test_masked_training_equals_reference_forward_and_mask_gradient(cls, seed, form):
    vit, images, logits, hard = case(cls, seed, form)
    policy_cls = FixedMask if form == "hard" else FixedMaskDynamicViT
    lr = logits.clone().requires_grad_(True)
    runner = sparse_vit(vit, {1: policy_cls(lr, hard).double()}, execution="mask")
    out = runner(images)
    feats = out.features.flatten(2).transpose(1, 2)
    w = torch.randn(feats.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (feats * w).sum().backward()

    lref = logits.clone().requires_grad_(True)
    ref = reference_forward(vit, images, 1, st_mask(lref, hard), form)
    (ref * w).sum().backward()
    assert torch.allclose(feats, ref, atol=1e-9)
    assert torch.allclose(lr.grad, lref.grad, atol=1e-9, rtol=1e-7)
    assert lr.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_hard_mask_gradient_comes_from_the_gate_only(seed):
    """One masked block (the last): dL/dl_j = <dL/dx'_j, y_j - x_j> * sigmoid'(l_j), with y the block
    output under hard key padding; no term through the attention."""
    vit = small_vit(True, depth=2, seed=seed)
    _, images, logits, hard = case(True, seed, "hard")
    lr = logits.clone().requires_grad_(True)
    out = sparse_vit(vit, {1: FixedMask(lr, hard).double()}, execution="mask")(images)
    w = torch.randn(out.features.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (out.features * w).sum().backward()
    with torch.no_grad():
        x = vit.blocks[0](embed(vit, images))
        y = ref_mlp(vit.blocks[1], ref_attention(vit.blocks[1], x, hard_key_padding(hard.double(), 1)))
        x2 = torch.cat([y[:, :1], torch.where(hard.unsqueeze(-1), y[:, 1:], x[:, 1:])], dim=1)
    x2.requires_grad_(True)
    (vit.norm(x2)[:, 1:] * w.flatten(2).transpose(1, 2)).sum().backward()
    s = logits.sigmoid()
    expect = (x2.grad[:, 1:] * (y[:, 1:] - x[:, 1:])).sum(-1) * s * (1 - s)
    assert torch.allclose(lr.grad, expect, atol=1e-10)


def test_fully_masked_sample_without_prefix_is_finite_and_frozen():
    """No prefix and nothing kept: every key would be masked. The runner lets that sample attend to
    every key (no NaN) and the gate keeps its patches as they were."""
    vit, images, logits, hard = case(False, 0, "hard")
    hard = hard.clone()
    hard[1] = False
    lr = logits.clone().requires_grad_(True)
    runner = sparse_vit(vit, {1: FixedMask(lr, hard).double()}, execution="mask")
    out = runner(images, return_layers=[1])
    assert torch.isfinite(out.features).all()
    out.features.sum().backward()
    assert torch.isfinite(lr.grad).all()
    x1 = out.layers[1][1].flatten(1).T  # sample 1 entering block 1, [N, C]
    expect = vit.norm(x1.unsqueeze(0))[0]
    assert torch.allclose(out.features[1].flatten(1).T, expect, atol=1e-12)


def test_dynamicvit_and_tps_declare_the_authors_training_form_and_vpp_svit_the_hard_one():
    for pol in (DynamicViTStage(32, 0.6), TPSStage(32, 0.6)):
        assert pol.training_attention == "policy" and pol.training_gate is False
    assert DynamicViTStage(32, 0.6, freeze_pruned=True).training_gate is True
    for pol in (SM(32), MapSM(32), SViTSelector(32)):
        assert pol.training_attention == "hard" and pol.training_gate is True


def test_dynamicvit_training_updates_pruned_tokens_and_freeze_pruned_keeps_them():
    vit, images, logits, hard = case(True, 1, "policy")
    outs = {}
    for freeze in (False, True):
        pol = FixedMaskDynamicViT(logits, hard).double()
        pol.training_gate = freeze
        outs[freeze] = sparse_vit(vit, {1: pol}, execution="mask")(images, return_layers=[1, 3])
    pruned = ~hard[0]
    before = outs[True].layers[1][0].flatten(1).T[pruned]
    assert torch.equal(outs[True].layers[3][0].flatten(1).T[pruned], before)  # frozen
    assert not torch.allclose(outs[False].layers[3][0].flatten(1).T[pruned], before)  # updated


# ---------------------------------------------------------------------------------------------
# TPS squeeze


def ref_squeeze(x, keep, pruned):
    """Literal loop over pruned tokens: host = argmax cos over kept; host <- (e x_k + sum e^cos x_p) / (e + sum e^cos)."""
    B, n, C = x.shape
    out = x.clone()
    for b in range(B):
        hosts = [k for k in range(n) if keep[b, k].detach() > 0.5]
        num = {k: math.e * x[b, k] for k in hosts}
        den = {k: torch.tensor(math.e, dtype=x.dtype) for k in hosts}
        for p in range(n):
            if keep[b, p].detach() > 0.5:
                continue
            cos = torch.stack([F.cosine_similarity(x[b, p], x[b, k], dim=0) for k in hosts])
            k = hosts[int(cos.argmax())]
            wgt = torch.exp(cos.max()) * pruned[b, p]
            num[k] = num[k] + wgt * x[b, p]
            den[k] = den[k] + wgt
        rows = [num[k] / den[k] if k in num else x[b, k] for k in range(n)]
        out[b] = torch.stack(rows)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tps_squeeze_equals_reference_and_has_no_gate_gradient_on_hosts(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 12, 8, generator=g, dtype=torch.float64)
    logits = torch.randn(2, 12, generator=g, dtype=torch.float64)
    hard = torch.rand(2, 12, generator=g) < 0.5
    hard[:, 0] = True
    alive = torch.ones(2, 12, dtype=torch.float64)
    w = torch.randn(2, 12, 8, generator=g, dtype=torch.float64)
    grads = []
    for fn in (squeeze, ref_squeeze):
        lg = logits.clone().requires_grad_(True)
        keep = st_mask(lg, hard)
        y = fn(x, keep, alive * (1 - keep))
        (y * w).sum().backward()
        grads.append((y.detach(), lg.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-12)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-12)
    # no straight-through gate on hosts: a host's own logit gets no gradient
    assert torch.all(grads[0][1][hard] == 0)
    assert torch.any(grads[0][1][~hard] != 0)


# ---------------------------------------------------------------------------------------------
# Initialisation


def test_authors_init_mapsm_and_dynamicvit_trunc_normal_sm_and_svit_pytorch_default():
    torch.manual_seed(0)
    mapsm, dvit, sm = MapSM(384), DynamicViTStage(384, 0.6), SM(384)
    for lin in (mapsm.head.fc1, mapsm.head.fc2, dvit.predictor.proj, dvit.predictor.mlp[0], dvit.predictor.mlp[4]):
        assert torch.all(lin.bias == 0)
        # timm's / torch's trunc_normal_(std=.02) cuts at +-2 absolute (100 std): a plain N(0, 0.02)
        assert lin.weight.std().item() == pytest.approx(0.02, rel=0.15 if lin.weight.numel() < 1000 else 0.03)
    bound = 1 / math.sqrt(384)  # PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert sm.head.fc1.weight.abs().max() <= bound
    assert sm.head.fc1.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert sm.head.fc1.bias.abs().max() > 0


def test_init_keep_is_an_option_and_off_by_default():
    from tests.test_learned_helpers import tiny_vit

    for method in ("vpp", "dynamicvit", "tps", "svit"):
        pruner = build(method, tiny_vit(), 0.55)
        assert pruner.config.options.get("init_keep", False) is False or method == "svit"
        heads = [m for m in pruner.runner.policies.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 2]
        assert heads and all(h.weight.abs().sum() > 0 for h in heads)  # not zeroed
        zeroed = build(method, tiny_vit(), 0.55, init_keep=True)
        sel = [m for m in zeroed.runner.policies.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 2]
        assert any(h.weight.abs().sum() == 0 for h in sel)


# ---------------------------------------------------------------------------------------------
# EViT: prune between attention and MLP, fused token = plain sum of a_j x_j (item 4)


def ref_attention_weights(blk, x):
    """(x + attention branch, softmax weights [B, H, n, n]) of a timm Block's weights, no mask."""
    a = blk.attn
    h = F.layer_norm(x, x.shape[-1:], blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    B, n, C = h.shape
    qkv = h @ a.qkv.weight.T + a.qkv.bias
    q, k, v = qkv.reshape(B, n, 3, a.num_heads, C // a.num_heads).permute(2, 0, 3, 1, 4)
    w = (q @ k.transpose(-2, -1) / math.sqrt(C // a.num_heads)).softmax(-1)
    out = (w @ v).transpose(1, 2).reshape(B, n, C)
    return x + out @ a.proj.weight.T + a.proj.bias, w


def ref_evit(vit, images, positions, rate, fuse):
    """The authors' EViT forward (one sample at a time), tracking the grid positions of every token;
    returns the final-normed feature of every grid position (pruned ones: their feature when pruned)."""
    outs = []
    for b in range(images.shape[0]):
        x = embed(vit, images[b:b + 1])
        N = x.shape[1] - 1
        groups = [[p] for p in range(N)]
        grid = torch.zeros(N, x.shape[-1], dtype=x.dtype)
        for i, blk in enumerate(vit.blocks):
            if i not in positions:
                x = blk(x)
                continue
            x, w = ref_attention_weights(blk, x)
            cls_attn = w[:, :, 0, 1:].mean(1)[0]
            left = math.ceil(rate * (x.shape[1] - 1))
            idx = torch.topk(cls_attn, left, largest=True, sorted=True).indices.tolist()
            rest = [j for j in range(x.shape[1] - 1) if j not in idx]
            tokens = x[0, 1:]
            for j in rest:
                for p in groups[j]:
                    grid[p] = tokens[j]
            new = [tokens[j] for j in idx]
            new_groups = [groups[j] for j in idx]
            if fuse and rest:
                new.append(sum(cls_attn[j] * tokens[j] for j in rest))
                new_groups.append([p for j in rest for p in groups[j]])
            x = torch.cat([x[:, :1], torch.stack(new).unsqueeze(0)], dim=1)
            groups = new_groups
            x = ref_mlp(blk, x)
        for j, g in enumerate(groups):
            for p in g:
                grid[p] = x[0, 1 + j]
        outs.append(vit.norm(torch.cat([x[:, :1], grid.unsqueeze(0)], dim=1))[0, 1:])
    return torch.stack(outs)


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evit_equals_the_authors_forward(fuse, seed):
    from patchprune.learned import EViT

    vit = small_vit(True, depth=6, seed=seed).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    runner = sparse_vit(vit, {1: EViT(0.7, fuse=fuse), 3: EViT(0.7, fuse=fuse)}, execution="gather")
    with torch.no_grad():
        ours = runner(images).features.flatten(2).transpose(1, 2)
        ref = ref_evit(vit, images, (1, 3), 0.7, fuse)
    assert torch.allclose(ours, ref, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tps_gathered_inference_squeeze_equals_the_dense_form(seed):
    from patchprune.learned.tps import squeeze_kept

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 40, 16, generator=g, dtype=torch.float64)
    hosts = torch.rand(3, 40, generator=g) < 0.5
    hosts[:, 0] = True
    alive = torch.rand(3, 40, generator=g) < 0.8  # dead tokens are neither hosts nor pruned
    hosts &= alive | (torch.arange(40) == 0)
    pruned = alive & ~hosts
    pruned[2] = False  # a sample that prunes nothing this stage
    dense = squeeze(x, hosts.double(), pruned.double())
    gathered = squeeze_kept(x, hosts, pruned)
    assert hosts.sum(1).unique().numel() > 1  # per-sample host counts differ: padded slots are exercised
    assert torch.allclose(gathered, dense, atol=1e-12)
    assert torch.equal(gathered[~hosts], x[~hosts])  # only hosts change
    assert torch.equal(squeeze_kept(x, hosts, torch.zeros_like(pruned)), x)
