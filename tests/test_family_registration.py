"""One way to register (issue 13, item 5): decorators + `import_family`, so a new method is one new file."""
from __future__ import annotations

import subprocess
import sys

import timm
import torch

from patchprune.registry import import_family


def test_import_family_picks_up_a_new_file(tmp_path, monkeypatch):
    pkg = tmp_path / "toyfamily"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from patchprune.registry import Registry\nREG = Registry('toy method')\n")
    for name in ("alpha", "beta"):
        (pkg / f"{name}.py").write_text(f"from toyfamily import REG\n\n@REG.register({name!r})\ndef make():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_family("toyfamily")
    import toyfamily

    assert toyfamily.REG.names() == ["alpha", "beta"]
    (pkg / "gamma.py").write_text("from toyfamily import REG\n\n@REG.register('gamma')\ndef make():\n    return 3\n")
    import_family("toyfamily")  # idempotent for the old files, registers the new one
    assert toyfamily.REG.names() == ["alpha", "beta", "gamma"]
    for mod in [m for m in sys.modules if m.startswith("toyfamily")]:
        monkeypatch.delitem(sys.modules, mod)


def test_learned_modules_import_in_any_order_without_a_cycle():
    code = ("import patchprune.learned.vpp\nimport patchprune.learned.registry as r\n"
            "print(','.join(r.available_methods()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "dynamicvit,evit,svit,tps,vpp,vpp-sm-only"


def test_a_method_defined_by_decorators_alone_builds_and_reports_its_loss():
    """What one new file does: a policy, a builder and a loss, each registered by its decorator."""
    from patchprune.learned import build
    from patchprune.learned.common import SparsityRecord, record
    from patchprune.learned.losses import register_loss
    from patchprune.learned.registry import LOSS_KEY, LearnedPruner, MethodConfig, _METHODS, register_method
    from patchprune.policies.base import Decision, Policy

    class KeepAllRecorded(Policy):
        def forward(self, ctx):
            keep = torch.ones_like(ctx.alive) if ctx.training else ctx.alive.clone()
            record(ctx, SparsityRecord("toy", keep.float().mean(), keep.float().mean(1)))
            return Decision(keep=keep)

    if "toy-keep-all" not in _METHODS:
        @register_method("toy-keep-all")
        def build_toy(model, target=0.55):
            return LearnedPruner(model, {2: KeepAllRecorded()}, MethodConfig("toy-keep-all", target, [target]))

        @register_loss("toy-keep-all")
        def toy_loss(recs, targets):
            return sum((r.keep_mean - t) ** 2 for r, t in zip(recs.values(), targets))

    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=16,
                            embed_dim=16, depth=3, num_heads=2, class_token=False, global_pool="avg")
    out = build("toy-keep-all", vit, 0.5)(torch.randn(1, 3, 32, 32))
    assert float(out.aux[LOSS_KEY]) == 0.25  # (1.0 - 0.5)^2: the registered loss ran
