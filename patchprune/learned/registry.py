"""Registry of learned pruning methods and `build(method, model, target)`.

Each method file registers a builder `(model, target, **options) -> LearnedPruner` with
`@register_method(name)` (and its policies with `register_policy`, its loss with
`losses.register_loss`); `build` imports every module of `patchprune.learned` first, so a new learned
method is one new file. `build` attaches the paper's configuration to a timm ViT. A `LearnedPruner` is the sparse ViT runner plus
the method's sparsity loss: every forward call returns the runner's output with
`out.aux["sparsity_loss"]` filled, so any training loop can add it to its task loss.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from torch import Tensor, nn

from patchprune.learned.losses import has_loss, sparsity_loss
from patchprune.registry import Registry, import_family
from patchprune.vit import SparseViT, SparseViTOutput, check_policy_eps, check_vit, sparse_vit

LOSS_KEY = "sparsity_loss"


@dataclass
class MethodConfig:
    """What a builder decided: schedule, loss targets and loss weights (for logs and reports)."""

    method: str
    target: float
    targets: list[float]
    loss_weights: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the sparsity loss
    options: dict[str, Any] = field(default_factory=dict)


class LearnedPruner(nn.Module):
    """A timm ViT under a learned pruning schedule, with the method's sparsity loss."""

    def __init__(self, model: nn.Module, schedule: dict[int, nn.Module], config: MethodConfig,
                 execution: str = "auto") -> None:
        super().__init__()
        self.runner: SparseViT = sparse_vit(model, schedule, execution=execution)
        self.config = config
        self.training = self.runner.training  # mode follows the wrapped model (see `sparse_vit`)

    @property
    def model(self) -> nn.Module:
        return self.runner.model

    @property
    def method(self) -> str:
        return self.config.method

    def forward(self, images: Tensor, stream: Any = None, return_layers: Iterable[int] = ()) -> SparseViTOutput:
        out = self.runner(images, stream=stream, return_layers=return_layers)
        if has_loss(self.config.method):
            out.aux[LOSS_KEY] = sparsity_loss(self.config.method, out.aux, self.config.targets, **self.config.loss_weights)
        return out

    def pruning_parameters(self) -> list[nn.Parameter]:
        """Parameters of the pruning modules (new in stage 2)."""
        return [p for p in self.runner.policies.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of the wrapped ViT."""
        return [p for p in self.runner.model.parameters()]

    def num_pruning_parameters(self) -> int:
        """Parameter count of the pruning modules."""
        return sum(p.numel() for p in self.pruning_parameters())


Builder = Callable[..., LearnedPruner]
_METHODS: Registry[Builder] = Registry("learned method")


def register_method(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make `builder(model, target, **options)` available to `build(name, ...)`."""
    return _METHODS.register(name)


def available_methods() -> list[str]:
    """Names accepted by `build` (sorted)."""
    _load()
    return _METHODS.names()


def build(method: str, model: nn.Module, target: float = 0.55, policy_eps: float | None = None,
          **options: Any) -> LearnedPruner:
    """Attach `method`'s paper configuration (55 % or 40 % PKR target) to a timm ViT.

    policy_eps: eps of DynamicViT's policy softmax in training (DynamicViT / TPS; default the
    authors' `patchprune.vit.POLICY_ATTENTION_EPS` = 1e-6, see `patchprune.blocks.policy_softmax`).
    """
    _load()
    check_vit(model)  # the runner's one supported-model check, before a builder reads the model
    builder = _METHODS.get(method)
    check_options(method, builder, options)
    pruner = builder(model, target, **options)
    if policy_eps is not None:
        pruner.runner.policy_eps = check_policy_eps(policy_eps)
    pruner.config.options["policy_eps"] = pruner.runner.policy_eps
    return pruner


def check_options(method: str, builder: Callable[..., Any], options: dict[str, Any]) -> None:
    """ValueError naming the options `builder` does not take (builders with **kwargs check their own)."""
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"unknown {method} options: {unknown}; it takes {sorted(set(params) - {'model', 'target'})}")


def embed_dim(model: nn.Module) -> int:
    """Width C of a timm ViT's tokens (embed_dim or num_features), or a ValueError."""
    dim = getattr(model, "embed_dim", None) or getattr(model, "num_features", None)
    if not isinstance(dim, int):
        raise ValueError("cannot read the ViT's width (no embed_dim / num_features attribute)")
    return dim


def depth(model: nn.Module) -> int:
    """Number of transformer blocks of a timm ViT, or a ValueError."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError("the model has no `blocks`; pass a timm VisionTransformer")
    return len(blocks)


def check_positions(model: nn.Module, positions: Sequence[int], method: str, first: int = 1) -> None:
    """ValueError unless every block position is in first..depth-1 (by default block 0 runs dense;
    VPP's layouts may put a module at 0, before the first block)."""
    d = depth(model)
    bad = [p for p in positions if not first <= p < d]
    if bad:
        raise ValueError(f"{method}: positions {bad} are outside {first}..{d - 1} for a {d}-block ViT")


def _load() -> None:
    import_family("patchprune.learned")  # every module registers its builders / policies / losses on import
