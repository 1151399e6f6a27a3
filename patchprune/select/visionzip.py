"""VisionZip: dominant tokens by attention plus a few contextual tokens that merge the rest.

Dominant: the K - C most attended patches (CLS attention when there is a CLS token, else the mean
attention each patch receives). Contextual: from the R remaining patches, C targets at a uniform
stride (step = max(1, floor(R / C))); every other remaining patch joins its most cosine-similar
target and the contextual token is target + mean of its members. Matching metric (as the authors):
the attention keys averaged over heads; the sparse ViT runner passes them (`metric`), a standalone
caller passes `metric=keys.mean(1)`, and without it (`match="auto"`) the tokens themselves are used.
Output order as published: [dominant (ascending position); contextual (target order)];
`order="raster"` lists every token by anchor instead. Default split D:C = 54:10 of the budget.

K counts patch tokens only: a CLS token is a prefix token that the caller keeps anyway. VisionZip's
published D = 54 counts the CLS (53 patches + CLS), so its 54 + 10 = 64 tokens are K = 63 here with
contextual=10 (the default split gives round(63 * 10 / 64) = 10), plus the CLS.
"""
from __future__ import annotations

import torch
from torch import Tensor

from patchprune.select.attention import attention_scores, rank
from patchprune.select.base import SelectInput, SelectResult, l2_normalize, register_method, take_rows
from patchprune.select.tome import check_unpadded
from patchprune.tokens import add_rows, mask_to_slots, row_max


def contextual_count(k: int, contextual: int | None, split: tuple[int, int] = (54, 10)) -> int:
    """C of the budget k (default k * 10 / 64, rounded), at most k - 1 so one dominant token remains."""
    c = round(k * split[1] / (split[0] + split[1])) if contextual is None else int(contextual)
    if c < 0:
        raise ValueError(f"contextual must be >= 0, got {contextual}")
    return min(c, k - 1)


@register_method("visionzip", needs_attention=True, merges=True)
def visionzip(x: Tensor, k: int, inp: SelectInput, *, score: str = "auto", contextual: int | None = None,
              metric: Tensor | None = None, match: str = "auto", order: str = "authors") -> SelectResult:
    """score: "auto" | "cls" | "mean"; contextual: C (default round(k * 10 / 64));
    metric: [B, N, Cm] matching features, the attention keys averaged over heads (the authors');
    match: "keys" (needs metric), "tokens", or "auto" (metric when given, else the tokens);
    order: "authors" ([dominant; contextual]) or "raster" (by anchor)."""
    check_unpadded(inp, "visionzip")
    B, N, Cf = x.shape
    if match not in ("auto", "keys", "tokens"):
        raise ValueError(f"visionzip match must be 'auto', 'keys' or 'tokens', got {match!r}")
    if order not in ("authors", "raster"):
        raise ValueError(f"visionzip order must be 'authors' or 'raster', got {order!r}")
    if match == "keys" and metric is None:
        raise ValueError("visionzip match='keys' needs metric=keys.mean(1) ([B, N, Cm] attention keys "
                         "averaged over heads); or use match='tokens'")
    if match == "tokens":
        metric = None
    if metric is not None and metric.shape[:2] != (B, N):
        raise ValueError(f"metric must be [B, N, Cm] with [B, N] = {(B, N)}, got {tuple(metric.shape)}")
    c = contextual_count(k, contextual)
    dom = rank(attention_scores(inp.attn, N, score))[:, : k - c]  # [B, D]
    is_dom = torch.zeros(B, N, dtype=torch.bool, device=x.device).scatter_(1, dom, True)
    rest, _ = mask_to_slots(~is_dom)  # [B, R] ascending
    R = rest.shape[1]
    anchors = dom
    feats = take_rows(x, dom)
    if c > 0:
        step = max(1, R // c)
        pos = torch.arange(0, R, step, device=x.device)[:c]
        is_target = torch.zeros(R, dtype=torch.bool, device=x.device)
        is_target[pos] = True
        targets, others = rest[:, pos], rest[:, ~is_target]  # [B, c], [B, R - c]
        m = l2_normalize((x if metric is None else metric.float()))
        join = row_max(torch.bmm(take_rows(m, others), take_rows(m, targets).transpose(1, 2)))[1]  # [B, R-c]
        sums = add_rows(x.new_zeros(B, c, Cf), join, take_rows(x, others))
        counts = torch.zeros(B, c, device=x.device).scatter_add_(1, join, torch.ones_like(join, dtype=x.dtype))
        ctx_feats = take_rows(x, targets) + sums / counts.clamp_min(1)[..., None]
        anchors = torch.cat([dom, targets], 1)
        feats = torch.cat([feats, ctx_feats], 1)
        sizes = torch.cat([torch.ones_like(dom, dtype=x.dtype), 1 + counts], 1)
    else:
        sizes = torch.ones_like(dom, dtype=x.dtype)
    if order == "authors":  # dominant ascending, then contextual in target order (the authors' masked_select)
        d = k - c
        perm = torch.cat([anchors[:, :d].argsort(dim=1), torch.arange(d, k, device=x.device).expand(B, -1)], 1)
        anchors = anchors.gather(1, perm)
    else:
        anchors, perm = anchors.sort(dim=1)
    feats, sizes = take_rows(feats, perm), sizes.gather(1, perm)
    out_pos = torch.arange(k, device=x.device).expand(B, k)
    assign = torch.full((B, N), -1, dtype=torch.long, device=x.device).scatter_(1, anchors, out_pos)
    if c > 0:
        assign.scatter_(1, others, assign.gather(1, targets.gather(1, join)))
    return SelectResult(tokens=feats.to(inp.tokens.dtype), index=inp.index.gather(1, anchors), size=sizes,
                        slots=anchors, assign=assign)
