"""Fidelity of the training-free methods against references written here from the published
algorithms (issue 12, items 5-8): ToMe (one-shot rounds and the in-ViT per-block merge), VisPruner,
VisionZip and EVTP's options. Each reference is a literal, per-sample reading of the authors'
algorithm, never a call into patchprune's own code for the step under test."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from patchprune.select import select
from patchprune.select.policies import tome_schedule
from patchprune.select.base import take_rows
from patchprune.select.tome import MergeState, merge_patches, merge_round
from patchprune.vit import embed, sparse_vit


def groups_of(assign):
    """{frozenset of input slots} per output slot, from an assign row."""
    out = {}
    for i, g in enumerate(assign.tolist()):
        if g >= 0:
            out.setdefault(g, set()).add(i)
    return {j: frozenset(s) for j, s in out.items()}


# ---------------------------------------------------------------------------------------------
# ToMe (item 5)


def ref_tome_round(x, size, groups, r, protect_first):
    """One round of ToMe's bipartite_soft_matching + merge_wavg, one sample: x [n, C], size [n]
    (the tokens themselves are the matching metric)."""
    return ref_tome_round_metric(x, x, size, groups, r, protect_first)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [5, 13, 24])
def test_tome_one_shot_rounds_equal_the_authors_order(seed, k):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 49, 16, generator=g, dtype=torch.float64)
    res = select(x, k, "tome", grid=(7, 7))
    for b in range(2):
        xr, sr, gr = x[b], torch.ones(49, dtype=torch.float64), [{i} for i in range(49)]
        while xr.shape[0] > k:
            n = xr.shape[0]
            xr, sr, gr = ref_tome_round(xr, sr, gr, min(n - k, n // 2), False)
        ours = groups_of(res.assign[b])
        ref = {frozenset(gg): (xr[j], sr[j]) for j, gg in enumerate(gr)}
        assert set(ours.values()) == set(ref)
        for j, grp in ours.items():
            feat, size = ref[grp]
            assert torch.allclose(res.tokens[b, j], feat, atol=1e-5)  # selection runs in fp32
            assert float(res.size[b, j]) == float(size)


def test_tome_raster_order_is_an_option_and_differs():
    # only a round that leaves a's unmerged before another round can differ: odd n (49 -> 25 -> 13 -> 7)
    differ = 0
    for seed in range(4):
        x = torch.randn(1, 49, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        a = select(x, 7, "tome", grid=(7, 7))
        b = select(x, 7, "tome", grid=(7, 7), order="raster")
        differ += set(groups_of(a.assign[0]).values()) != set(groups_of(b.assign[0]).values())
    assert differ > 0
    with pytest.raises(ValueError, match="order"):
        select(torch.randn(1, 16, 4), 4, "tome", grid=(4, 4), order="sideways")


def small_vit(cls=True, depth=4, seed=0):
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2, mlp_ratio=2.0,
                            class_token=cls, global_pool="token" if cls else "", num_classes=0)
    return vit.double().eval()


def ref_tome_vit(vit, image, r):
    """ToMe's patched timm ViT, one sample: every block = proportional attention (logits + log size),
    metric = keys averaged over heads, bipartite merge of r tokens (CLS protected) with merge_wavg,
    then the MLP. Returns the final-normed feature of every grid position."""
    x = embed(vit, image)[0]
    P = vit.num_prefix_tokens
    size = torch.ones(x.shape[0], dtype=x.dtype)
    groups = [set()] * P + [{p} for p in range(x.shape[0] - P)]
    for blk in vit.blocks:
        a = blk.attn
        h = F.layer_norm(x, x.shape[-1:], blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        n, C = h.shape
        q, k, v = (h @ a.qkv.weight.T + a.qkv.bias).reshape(n, 3, a.num_heads, C // a.num_heads).permute(1, 2, 0, 3)
        logits = q @ k.transpose(-2, -1) / math.sqrt(C // a.num_heads) + size.log()[None, None, :]
        out = (logits.softmax(-1) @ v).transpose(0, 1).reshape(n, C)
        x = x + out @ a.proj.weight.T + a.proj.bias
        rr = min(r, (n - P) // 2)
        if rr > 0:
            x, size, groups = ref_tome_round_metric(x, k.mean(0), size, groups, rr, protect_first=P > 0)
        hm = F.layer_norm(x, x.shape[-1:], blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        x = x + F.gelu(hm @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias) @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    x = vit.norm(x)
    grid = torch.zeros(16, x.shape[-1], dtype=x.dtype)
    for j, g in enumerate(groups):
        for p in g:
            grid[p] = x[j]
    return grid


def ref_tome_round_metric(x, metric, size, groups, r, protect_first):
    """ref_tome_round with a separate matching metric (the keys)."""
    m = metric / metric.norm(dim=-1, keepdim=True)
    scores = m[::2] @ m[1::2].T
    if protect_first:
        scores[0, :] = -math.inf
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(descending=True)
    unm_idx, src_idx = edge_idx[r:], edge_idx[:r]
    dst_idx = node_idx[src_idx]
    if protect_first:
        unm_idx = unm_idx.sort().values
    xs = x * size[:, None]
    src, dst = xs[::2], xs[1::2].clone()
    s_src, s_dst = size[::2], size[1::2].clone()
    g_src, g_dst = groups[::2], [set(g) for g in groups[1::2]]
    for s, d in zip(src_idx.tolist(), dst_idx.tolist()):
        dst[d] = dst[d] + src[s]
        s_dst[d] = s_dst[d] + s_src[s]
        g_dst[d] |= g_src[s]
    new_size = torch.cat([s_src[unm_idx], s_dst])
    return (torch.cat([src[unm_idx], dst]) / new_size[:, None], new_size,
            [set(g_src[i]) for i in unm_idx.tolist()] + g_dst)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("r", [2, 3])
def test_tome_block_equals_the_authors_patched_vit(seed, r):
    vit = small_vit(depth=4, seed=seed)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    schedule = tome_schedule(4, r)
    assert sorted(schedule) == [0, 1, 2, 3]  # every block merges
    with torch.no_grad():
        ours = sparse_vit(vit, schedule, execution="gather")(images).features.flatten(2).transpose(1, 2)
        for b in range(2):
            assert torch.allclose(ours[b], ref_tome_vit(vit, images[b:b + 1], r), atol=1e-5)  # merges run in fp32


# ---------------------------------------------------------------------------------------------
# VisPruner (item 6) and VisionZip (item 7)


def cls_attention(B, N, seed, heads=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, heads, N + 1, N + 1, generator=g, dtype=torch.float64) * 3).softmax(-1)


def ref_vispruner(x, attn, k, important=0.5, step=8):
    """VisPruner's published selection for one sample: x [N, C], attn [H, 1+N, 1+N]."""
    imp_scores = attn[:, 0, 1:].mean(0)
    ranked = imp_scores.argsort(descending=True).tolist()
    t_imp = int(important * k)
    imp, remaining = ranked[:t_imp], ranked[t_imp:]
    t_div = k - t_imp
    while len(remaining) > t_div:
        r = min(step, len(remaining) - t_div)
        xs = F.normalize(x[remaining], dim=-1)
        a_idx, b_idx = remaining[::2], remaining[1::2]
        scores = (xs[::2] @ xs[1::2].T).max(dim=-1).values
        distinct = scores.argsort(descending=True)[r:].tolist()
        remaining = [a_idx[i] for i in distinct] + b_idx
    return set(imp) | set(remaining)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("N,k", [(64, 16), (49, 12), (49, 9), (100, 33)])  # odd lists included
def test_vispruner_equals_the_authors_rebuilt_lists(seed, N, k):
    g = torch.Generator().manual_seed(seed + 10)
    x = torch.randn(2, N, 8, generator=g, dtype=torch.float64)
    attn = cls_attention(2, N, seed)
    side = int(math.isqrt(N))
    res = select(x, k, "vispruner", grid=(side, N // side), attn=attn)
    for b in range(2):
        assert set(res.index[b].tolist()) == ref_vispruner(x[b], attn[b], k)


def ref_visionzip(x, attn, keys, dominant, contextual):
    """VisionZip's published merge for one sample (patches only; the CLS is kept by the caller):
    returns the output tokens in its order [dominant; contextual] and their anchor positions."""
    N = x.shape[0]
    cls_attention_sum = attn[:, 0, 1:].sum(0)
    topk = cls_attention_sum.topk(dominant).indices
    mask = torch.ones(N, dtype=torch.bool)
    mask[topk] = False
    dom_idx = torch.nonzero(~mask).flatten()  # masked_select: ascending
    rest = torch.nonzero(mask).flatten()
    metric = keys[rest]
    metric = metric / metric.norm(dim=-1, keepdim=True)
    step = max(1, metric.shape[0] // contextual)
    target_indices = torch.arange(0, metric.shape[0], step)[:contextual]
    others = ~torch.isin(torch.arange(metric.shape[0]), target_indices)
    similarity = metric[others] @ metric[target_indices].T
    assign = torch.zeros(int(others.sum()), contextual, dtype=x.dtype).scatter_(1, similarity.argmax(1, keepdim=True), 1)
    counts = assign.sum(0).clamp(min=1).unsqueeze(-1)
    aggregated = assign.T @ x[rest][others] / counts
    ctx_tokens = x[rest][target_indices] + aggregated
    return torch.cat([x[dom_idx], ctx_tokens]), torch.cat([dom_idx, rest[target_indices]])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("N,k,c", [(64, 63 - 40, 4), (49, 20, 5), (64, 16, 3)])
def test_visionzip_equals_the_authors_merge_with_keys_and_order(seed, N, k, c):
    g = torch.Generator().manual_seed(seed + 20)
    x = torch.randn(2, N, 8, generator=g, dtype=torch.float64)
    keys = torch.randn(2, N, 6, generator=g, dtype=torch.float64)
    attn = cls_attention(2, N, seed)
    side = int(math.isqrt(N))
    res = select(x, k, "visionzip", grid=(side, N // side), attn=attn, contextual=c, metric=keys)
    for b in range(2):
        tokens, anchors = ref_visionzip(x[b], attn[b], keys[b], k - c, c)
        assert res.index[b].tolist() == anchors.tolist()
        assert torch.allclose(res.tokens[b], tokens, atol=1e-5)  # selection runs in fp32
    # matching on the tokens instead of the keys moves members to other targets
    by_tokens = select(x, k, "visionzip", grid=(side, N // side), attn=attn, contextual=c, metric=keys, match="tokens")
    assert not torch.equal(by_tokens.assign, res.assign)


def test_visionzip_published_budget_maps_to_k_63_and_the_runner_passes_keys():
    from patchprune.select.policies import SelectPolicy
    from patchprune.select.visionzip import contextual_count

    assert contextual_count(63, None) == 10  # D = 54 (53 patches + CLS) + C = 10 -> K = 63 patches + CLS
    assert SelectPolicy("visionzip", 0.5).needs_keys and SelectPolicy("tome", 0.5).needs_keys
    assert not SelectPolicy("visionzip", 0.5, metric=None).needs_keys
    with pytest.raises(ValueError, match="match='keys' needs metric"):
        select(torch.randn(1, 16, 4), 4, "visionzip", grid=(4, 4), attn=cls_attention(1, 16, 0).float(), match="keys")


# ---------------------------------------------------------------------------------------------
# EVTP options (item 8)


def ref_evtp(x, grid, k, init="mean", eps=1e-6):
    """The spec's EVTP for one frame, literally, in float64: returns the picks in order."""
    H, W = grid
    xh = x / x.norm(dim=-1, keepdim=True)
    var = (xh - xh.mean(0)).square().sum(-1).mean()
    lam = 1.0 / (var + eps)
    idx = torch.arange(H * W)
    p = torch.stack([(idx // W) / (H - 1), (idx % W) / (W - 1)], dim=-1).to(x.dtype)
    xt = torch.cat([xh, lam * p], dim=-1)
    if init == "mean":
        first = int((xt - xt.mean(0)).norm(dim=-1).argmax())
    else:  # "feature_mean": farthest from the mean of the normalised features alone
        first = int((xh - xh.mean(0)).norm(dim=-1).argmax())
    picks = [first]
    delta = (xt - xt[first]).norm(dim=-1)
    delta[first] = -math.inf
    while len(picks) < k:
        j = int(delta.argmax())
        picks.append(j)
        delta = torch.minimum(delta, (xt - xt[j]).norm(dim=-1))
        delta[picks] = -math.inf
    return picks


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("init", ["mean", "feature_mean"])
def test_evtp_starts_equal_the_spec_reference(seed, init):
    g = torch.Generator().manual_seed(seed + 30)
    x = torch.randn(2, 64, 16, generator=g, dtype=torch.float64) + 0.5
    res = select(x.float(), 12, "evtp", grid=(8, 8), init=init)
    for b in range(2):
        ref = ref_evtp(x[b], (8, 8), 12, init)
        assert res.order[b, 0].item() == ref[0]
        assert set(res.index[b].tolist()) == set(ref)


def test_feature_mean_start_differs_from_the_joint_mean_start_somewhere():
    differ = 0
    for seed in range(8):
        x = torch.randn(1, 64, 4, generator=torch.Generator().manual_seed(seed)) + 0.3
        a = select(x, 5, "evtp", grid=(8, 8), init="mean").order[0, 0]
        b = select(x, 5, "evtp", grid=(8, 8), init="feature_mean").order[0, 0]
        differ += int(a != b)
    assert differ > 0


def test_evtp_lambda_uses_the_variance_of_centred_features():
    """Nearly equal tokens: E||x^||^2 - ||mean||^2 cancels in fp32; the centred form keeps precision."""
    from patchprune.select.base import SelectInput
    from patchprune.select.evtp import joint_space

    g = torch.Generator().manual_seed(5)
    base = torch.randn(1, 1, 64, generator=g, dtype=torch.float64)
    x = base + 4e-4 * base.norm() * torch.randn(1, 100, 64, generator=g, dtype=torch.float64)
    xh = x[0] / x[0].norm(dim=-1, keepdim=True)
    var = (xh - xh.mean(0)).square().sum(-1).mean()  # ~1e-5, above eps
    assert 1e-6 < float(var) < 1e-4
    inp = SelectInput(tokens=x.float(), grid=(10, 10), index=torch.arange(100)[None])
    lam = joint_space(x.float(), inp).lam
    assert float(lam[0]) == pytest.approx(float(1.0 / (var + 1e-6)), rel=1e-4)


def test_kcenter_method_with_the_rungs_settings_equals_the_ladders_kcenter_rung():
    x = torch.randn(3, 64, 16, generator=torch.Generator().manual_seed(7))
    rung = select(x, 10, "evtp", grid=(8, 8), ablation="kcenter")
    method = select(x, 10, "kcenter", grid=(8, 8), normalize=True, init="first")
    assert torch.equal(rung.order, method.order)
    default = select(x, 10, "kcenter", grid=(8, 8))  # raw features, farthest-from-mean start: documented difference
    assert not torch.equal(default.order, rung.order)


def _merge_round_patch_groups(x, size, metric, r, P, order):
    """merge_round on the whole list [prefix; patches] with the prefix groups dropped: what the
    in-ViT policy returned before `merge_patches` (the reference it must equal exactly)."""
    prefix = torch.zeros(x.shape[0], P, x.shape[2], dtype=x.dtype)
    full_size = torch.cat([torch.ones(x.shape[0], P, dtype=size.dtype), size], dim=1)
    st = merge_round(MergeState.start(torch.cat([prefix, x], 1), full_size, metric), r, order, protected=P, last=True)
    keep = st.anchor >= P
    slots = [row.nonzero().flatten() for row in keep]
    slots = torch.stack(slots)
    group = torch.cumsum(keep.long(), dim=1) - 1
    return (take_rows(st.feats, slots), st.size.gather(1, slots), st.anchor.gather(1, slots) - P,
            group.gather(1, st.assign[:, P:]))


@pytest.mark.parametrize("P", [0, 1, 2, 3])
@pytest.mark.parametrize("n,r", [(16, 5), (17, 8), (9, 4), (12, 0), (6, 3)])
@pytest.mark.parametrize("order", ["authors", "raster"])
def test_merge_patches_equals_merge_round_without_the_prefix(P, n, r, order):
    g = torch.Generator().manual_seed(P * 100 + n + r)
    x = torch.randn(2, n, 5, generator=g)
    size = torch.randint(1, 4, (2, n), generator=g).float()
    metric = torch.randn(2, P + n, 3, generator=g)
    metric[:, 1] = metric[:, 4 % (P + n)]  # tied scores are broken alike
    pm = merge_patches(x, size, metric, r, protected=P, order=order)
    tokens, sizes, anchor, assign = _merge_round_patch_groups(x, size, metric, r, P, order)
    assert pm.tokens.shape == (2, n - r, 5)
    assert torch.equal(pm.anchor, anchor) and torch.equal(pm.assign, assign)
    assert torch.equal(pm.size, sizes) and torch.equal(pm.tokens, tokens)  # the same arithmetic, bit for bit
    assert torch.equal(pm.size.sum(1), size.sum(1))  # no patch lost or counted twice


def test_merge_patches_checks_its_arguments():
    x, size = torch.randn(1, 8, 4), torch.ones(1, 8)
    with pytest.raises(ValueError, match="metric"):
        merge_patches(x, size, torch.randn(1, 8, 3), 2, protected=1)
    with pytest.raises(ValueError, match="at most"):
        merge_patches(x, size, torch.randn(1, 9, 3), 5, protected=1)
    with pytest.raises(ValueError, match="order"):
        merge_patches(x, size, torch.randn(1, 9, 3), 2, protected=1, order="sideways")
