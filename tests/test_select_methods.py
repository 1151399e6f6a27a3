"""patchprune.select: the contract of every method and the properties the EVTP spec asks for."""
import pytest
import torch

from patchprune.select import ABLATION_LADDER, available_methods, budget, method_spec, select
from patchprune.select.divprune import most_isolated
from patchprune.select.vispruner import deduplicate
from patchprune.select.evtp import joint_space
from patchprune.select.base import SelectInput
from patchprune.select.coverage import coverage_radius

GRID = (7, 9)
N = GRID[0] * GRID[1]


def _tokens(B=3, C=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, C, generator=g)


def _attn(B=3, prefix=0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 2, prefix + N, prefix + N, generator=g).softmax(-1)


def _call(method, x, k, **kw):
    attn = _attn(x.shape[0]) if method_spec(method).needs_attention else None
    return select(x, k, method=method, grid=GRID, attn=attn, **kw)


def test_registry_lists_every_method():
    assert set(available_methods()) >= {"random", "kcenter", "evtp", "divprune", "tome", "visionzip", "vispruner",
                                        "attention"}


def test_budget_matches_the_paper():
    assert [budget(729, r) for r in (0.05, 0.1, 0.2)] == [36, 73, 146]
    assert budget(3, 0.01) == 1


@pytest.mark.parametrize("method", sorted(available_methods()))
@pytest.mark.parametrize("k", [1, 7, 40, N])
def test_every_method_returns_k_distinct_tokens(method, k):
    x = _tokens()
    res = _call(method, x, k)
    B = x.shape[0]
    assert res.tokens.shape == (B, k, x.shape[2]) and res.index.shape == (B, k) and res.size.shape == (B, k)
    assert int(res.index.min()) >= 0 and int(res.index.max()) < N
    assert all(len(set(row.tolist())) == k for row in res.index), "duplicate tokens"
    if method != "visionzip":  # VisionZip lists [dominant; contextual] as published (test_fidelity_select)
        assert torch.equal(res.index, res.index.sort(1).values), "not in raster order"
    if res.assign is None:  # pure selection: the original features, size 1
        assert torch.equal(res.tokens, x.gather(1, res.index[..., None].expand(-1, -1, x.shape[2])))
        assert torch.equal(res.size, torch.ones_like(res.size))
    else:  # merge: every input token joins one output token (or is dropped: -1), sizes count members
        assert res.assign.shape == (B, N) and int(res.assign.min()) >= -1 and int(res.assign.max()) < k
        kept = res.assign >= 0
        counts = torch.zeros(B, k + 1).scatter_add_(1, torch.where(kept, res.assign, k), torch.ones(B, N))[:, :k]
        assert torch.equal(counts, res.size)
        if method == "tome" or k > 1:
            assert bool(kept.all())
        assert torch.equal(res.assign.gather(1, res.slots), torch.arange(k).expand(B, k))


@pytest.mark.parametrize("method", sorted(available_methods()))
def test_results_are_deterministic(method):
    x = _tokens(seed=3)
    a, b = _call(method, x, 11), _call(method, x, 11)
    assert torch.equal(a.index, b.index) and torch.equal(a.tokens, b.tokens)


def test_random_depends_on_its_seed_only():
    x = _tokens()
    a = select(x, 10, method="random", seed=5)
    assert torch.equal(a.index, select(x * 3, 10, method="random", seed=5).index)
    assert not torch.equal(a.index, select(x, 10, method="random", seed=6).index)
    assert not torch.equal(a.index[0], a.index[1])  # frames get their own subsets


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_fp32(dtype):
    x = _tokens().to(dtype)
    for method in ("evtp", "kcenter", "divprune", "tome"):
        res = _call(method, x, 9)
        assert res.tokens.dtype == dtype
        assert torch.equal(res.index, _call(method, x.float(), 9).index)


def test_divprune_equals_kcenter_on_normalised_features_from_the_same_start():
    x = torch.nn.functional.normalize(_tokens(seed=4), dim=-1)
    start = torch.tensor([5, 17, 40])
    d = select(x, 20, method="divprune", grid=GRID, init=start)
    k = select(x, 20, method="kcenter", grid=GRID, init=start)
    assert torch.equal(d.order, k.order)
    assert torch.equal(d.order[:, 0], start)
    # kcenter's own normalisation gives the same on raw features
    assert torch.equal(select(_tokens(seed=4), 20, method="kcenter", grid=GRID, init=start, normalize=True).order,
                       d.order)


def test_divprune_first_pick_is_the_most_isolated_token():
    x = _tokens(seed=5)
    xh = torch.nn.functional.normalize(x, dim=-1)
    dist = 1 - xh @ xh.transpose(1, 2) + torch.diag(torch.full((N,), float("inf")))
    expected = dist.amin(2).argmax(1)
    assert torch.equal(select(x, 5, method="divprune", grid=GRID).order[:, 0], expected)
    js = joint_space(x, SelectInput(tokens=x, grid=GRID, index=torch.arange(N).expand(3, N)), spatial=False)
    for block in (1, 4, N):
        assert torch.equal(most_isolated(js.z, js.sq, None, GRID[1], block=block), expected)


def test_divprune_picks_an_outlier_first():
    g = torch.Generator().manual_seed(6)
    x = torch.ones(3, N, 16) + 0.1 * torch.randn(3, N, 16, generator=g)  # one tight cluster of directions
    x[:, 30] = -torch.ones(16)  # and one token pointing elsewhere
    assert select(x, 3, method="divprune", grid=GRID).order[:, 0].tolist() == [30, 30, 30]


@pytest.mark.parametrize("init", ["first", "mean"])
def test_evtp_without_spatial_weight_equals_kcenter(init):
    x = torch.nn.functional.normalize(_tokens(seed=7), dim=-1)
    e = select(x, 15, method="evtp", grid=GRID, lam=0.0, init=init)
    k = select(x, 15, method="kcenter", grid=GRID, init=init)
    assert torch.equal(e.order, k.order)
    assert torch.equal(select(x, 15, method="evtp", grid=GRID, ablation="kcenter").order,
                       select(x, 15, method="kcenter", grid=GRID, init="first").order)


def test_evtp_ablation_ladder_rungs_differ_as_documented():
    assert list(ABLATION_LADDER) == ["kcenter", "spatial", "adaptive", "full"]
    x = _tokens(seed=8)
    orders = {r: select(x, 12, method="evtp", grid=GRID, ablation=r).order for r in ABLATION_LADDER}
    assert torch.equal(orders["full"], select(x, 12, method="evtp", grid=GRID).order)
    assert not torch.equal(orders["kcenter"], orders["spatial"])
    # the last rung only changes the start
    assert torch.equal(orders["adaptive"][:, 0], torch.zeros(3, dtype=torch.long))
    start = orders["full"][:, 0]
    assert torch.equal(select(x, 12, method="evtp", grid=GRID, ablation="adaptive", init=start).order, orders["full"])


def test_evtp_lambda_adapts_to_feature_spread():
    inp = SelectInput(tokens=None, grid=GRID, index=torch.arange(N).expand(2, N))
    x = _tokens(B=2, seed=9)
    x[1] = x[1] * 0.05 + torch.ones(x.shape[2])  # second frame: nearly one direction (homogeneous)
    lam = joint_space(x, inp).lam
    assert lam[1] > 10 * lam[0]
    xh = torch.nn.functional.normalize(x, dim=-1)
    var = (xh - xh.mean(1, keepdim=True)).square().sum(-1).mean(1)
    assert torch.allclose(lam, 1 / (var + 1e-6), rtol=1e-4)
    assert torch.allclose(joint_space(x, inp, scale="inv_std").lam, 1 / (var.sqrt() + 1e-6), rtol=1e-4)
    assert torch.allclose(joint_space(x, inp, variance="channel").lam, 1 / (var / x.shape[2] + 1e-6), rtol=1e-4)
    per_batch = joint_space(x, inp, per="batch").lam
    pooled = (xh.reshape(-1, x.shape[2]) - xh.reshape(-1, x.shape[2]).mean(0)).square().sum(-1).mean()
    assert torch.allclose(per_batch, (1 / (pooled + 1e-6)).expand(2), rtol=1e-4)


def test_evtp_covers_a_flat_region_that_kcenter_leaves_empty():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(1, N, 32, generator=g)
    cols = torch.arange(N) % GRID[1]
    x[0, cols < 6] = torch.ones(32) + 0.001 * torch.randn(int((cols < 6).sum()), 32, generator=g)  # flat area
    e = select(x, 12, method="evtp", grid=GRID)
    k = select(x, 12, method="kcenter", grid=GRID)
    assert (e.index % GRID[1] < 6).sum() > (k.index % GRID[1] < 6).sum()
    assert coverage_radius(x, e.index, "spatial", GRID) < coverage_radius(x, k.index, "spatial", GRID)


def test_tome_preserves_size_weighted_sum_and_total_size():
    x = _tokens(seed=11)
    size = torch.randint(1, 4, (3, N)).float()
    for k in (1, 10, 31, 32, 50, N):
        res = select(x, k, method="tome", grid=GRID, size=size)
        assert torch.allclose((res.tokens * res.size[..., None]).sum(1), (x * size[..., None]).sum(1), atol=1e-4)
        assert torch.allclose(res.size.sum(1), size.sum(1))
        # each output token is the size-weighted mean of its group
        groups = torch.zeros(3, k, x.shape[2]).scatter_add_(1, res.assign[..., None].expand_as(x), x * size[..., None])
        assert torch.allclose(groups / res.size[..., None], res.tokens, atol=1e-5)


def test_tome_merges_the_most_similar_pairs():
    x = torch.eye(8)[None].repeat(1, 1, 1)[:, :, :8].clone()  # 8 orthogonal tokens
    x[0, 2] = x[0, 3] + 0.01 * x[0, 2]  # token 2 (A) nearly equals token 3 (B)
    res = select(x, 7, method="tome", grid=(2, 4))
    assert res.assign[0, 2] == res.assign[0, 3]
    assert res.size[0].tolist().count(2.0) == 1


def test_visionzip_keeps_dominant_tokens_and_merges_the_rest():
    x = _tokens(seed=12)
    attn = _attn()
    k = 20
    res = select(x, k, method="visionzip", grid=GRID, attn=attn, contextual=4)
    received = attn.mean(2).mean(1)
    dominant = received.argsort(1, descending=True)[:, :16]
    for b in range(3):
        assert set(dominant[b].tolist()) <= set(res.index[b].tolist())
    assert (res.size > 1).sum(1).le(4).all() and torch.equal(res.size.sum(1), torch.full((3,), float(N)))
    cls = _attn(prefix=1)
    res_cls = select(x, k, method="visionzip", grid=GRID, attn=cls, contextual=0)
    top_cls = cls[:, :, 0, 1:].mean(1).argsort(1, descending=True)[:, :k].sort(1).values
    assert torch.equal(res_cls.index, top_cls)


def test_attention_method_ranks_by_received_or_cls_attention():
    x = _tokens()
    attn = _attn()
    res = select(x, 10, method="attention", grid=GRID, attn=attn)
    assert torch.equal(res.index, attn.mean(2).mean(1).topk(10).indices.sort(1).values)
    cls = _attn(prefix=2)
    res = select(x, 10, method="attention", grid=GRID, attn=cls)
    assert torch.equal(res.index, cls[:, :, 0, 2:].mean(1).topk(10).indices.sort(1).values)


def test_vispruner_keeps_the_important_half():
    x = _tokens(seed=13)
    attn = _attn()
    res = select(x, 20, method="vispruner", grid=GRID, attn=attn)
    important = attn.mean(2).mean(1).argsort(1, descending=True)[:, :10]
    for b in range(3):
        assert set(important[b].tolist()) <= set(res.index[b].tolist())


def test_vispruner_deduplication_drops_the_a_token_most_similar_to_b():
    sim = torch.full((1, 6, 6), 0.1)
    sim[0].fill_diagonal_(1.0)
    sim[0, 2, 3] = sim[0, 3, 2] = 0.99  # list position 2 (A) nearly equals position 3 (B)
    assert deduplicate(sim, 5, order="raster").tolist() == [[0, 1, 3, 4, 5]]
    assert deduplicate(sim, 5).tolist() == [[0, 4, 1, 3, 5]]  # the authors' list: [surviving A; B]
    sim[0, 0, 1] = sim[0, 1, 0] = 0.95
    assert deduplicate(sim, 4, order="raster").tolist() == [[1, 3, 4, 5]]
    assert sorted(deduplicate(sim, 4)[0].tolist()) == [1, 3, 4, 5]
    assert deduplicate(sim, 4, step=1).shape == (1, 4)


def test_padding_slots_are_never_kept():
    x = _tokens(seed=14)
    valid = torch.rand(3, N, generator=torch.Generator().manual_seed(0)) > 0.3
    for method in ("evtp", "kcenter", "divprune", "random", "attention"):
        res = _call(method, x, 8, valid=valid)
        assert bool(valid.gather(1, res.index).all()), method


@pytest.mark.parametrize("bad,match", [
    (dict(k=0), "k must be in"), (dict(k=N + 1), "k must be in"), (dict(k=2.5), "k must be an int"),
    (dict(grid=(5, 5)), "does not match"), (dict(nan=True), "NaN"), (dict(option=True), "has no option"),
])
def test_bad_inputs_raise_clear_errors(bad, match):
    x = _tokens()
    if bad.get("nan"):
        x[1, 3, 2] = float("nan")
    kwargs = {"unknown_option": 1} if bad.get("option") else {}
    with pytest.raises(ValueError, match=match):
        select(x, bad.get("k", 5), method="evtp", grid=bad.get("grid", GRID), **kwargs)


def test_missing_or_malformed_attention_raises():
    x = _tokens()
    for method in ("attention", "visionzip", "vispruner"):
        with pytest.raises(ValueError, match="attn"):
            select(x, 5, method=method, grid=GRID)
    with pytest.raises(ValueError, match="attn must be"):
        select(x, 5, method="attention", grid=GRID, attn=torch.rand(3, 2, N - 1, N - 1))
    with pytest.raises(ValueError, match="unknown selection method"):
        select(x, 5, method="nope", grid=GRID)


def test_evtp_needs_a_grid_when_it_cannot_infer_one():
    x = torch.randn(1, 10, 4)
    with pytest.raises(ValueError, match="grid"):
        select(x, 3, method="evtp")
    assert select(x, 3, method="kcenter").index.shape == (1, 3)
    assert select(torch.randn(1, 16, 4), 3, method="evtp").index.shape == (1, 3)  # 4 x 4 inferred


def test_divprune_matrix_mode_first_pick_and_picks_match_the_bounded_path():
    """At k >= N / 2 DivPrune reads its first pick from the engine's N x N matrix: same picks as the
    bounded most-isolated search followed by the pool rounds."""
    from patchprune.select import farthest
    from patchprune.select.divprune import most_isolated_in
    x = _tokens(seed=7)
    k = N // 2 + 3
    assert farthest.use_matrix(k, (x.shape[0], N), x.device)
    got = select(x, k, method="divprune", grid=GRID).order
    js = joint_space(x, SelectInput(tokens=x, grid=GRID, index=torch.arange(N).expand(3, N)), spatial=False)
    start = most_isolated(js.z, js.sq, None, GRID[1])
    assert torch.equal(most_isolated_in(farthest.pairwise_sq(js.z, js.sq)), start)
    assert torch.equal(got, farthest.farthest_first(js.z, k, start, sq=js.sq, strategy="pool"))


@pytest.mark.parametrize("method", ["evtp", "kcenter", "divprune"])
def test_engine_strategy_option_changes_no_pick(method):
    """`strategy` reaches the farthest-first engine through `select`: pool rounds and matrix mode pick alike."""
    x = _tokens(seed=8)
    for k in (5, N // 2 + 4):
        pool = select(x, k, method=method, grid=GRID, strategy="pool").order
        matrix = select(x, k, method=method, grid=GRID, strategy="matrix").order
        assert torch.equal(pool, matrix), (method, k)
        assert torch.equal(select(x, k, method=method, grid=GRID).order, pool)


@pytest.mark.parametrize("B", [1, 2])
def test_host_side_selection_accepts_inputs_that_require_grad(B):
    """The NumPy chains (matrix mode, VisPruner's rounds) read detached copies: no error under autograd."""
    x = _tokens(B=B, seed=9).requires_grad_(True)
    attn = torch.rand(B, 2, N + 1, N + 1).softmax(-1)
    for method in ("vispruner", "evtp", "divprune"):
        kw = {"attn": attn} if method == "vispruner" else {}
        order = select(x, N // 2 + 2, method=method, grid=GRID, **kw).order
        assert order.shape == (B, N // 2 + 2) and len(set(order[0].tolist())) == N // 2 + 2
