"""Start-up of the command line: building the parser imports no heavy module (issue 13, item 4)."""
import json
import subprocess
import sys

import pytest

from patchprune.cli import COMMAND_MODULES, build_parser, handler

HEAVY = ("torch", "timm", "transformers", "matplotlib", "av", "pycocotools")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_building_the_parser_imports_no_heavy_module():
    loaded = _modules_after("from patchprune.cli import build_parser\nbuild_parser()")
    assert "patchprune.cli" in loaded
    assert not [m for m in HEAVY if m in loaded]


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_every_command_module_is_light(module):
    """Each registered command module, imported alone, leaves torch & co. unloaded (names the offender)."""
    loaded = _modules_after(f"import {module}")
    assert module in loaded
    assert [m for m in HEAVY if m in loaded] == [], f"{module} imports a heavy module at its top level"


def test_import_patchprune_is_light_and_resolves_names_on_use():
    loaded = _modules_after("import patchprune\nassert patchprune.__version__")
    assert "torch" not in loaded
    loaded = _modules_after("import patchprune\nassert callable(patchprune.sparse_vit)")
    assert "torch" in loaded and "patchprune.vit" in loaded


def test_help_lists_every_group_and_the_lazy_handlers_resolve():
    parser = build_parser()
    text = parser.format_help()
    for word in ("bench", "data", "eval", "demo"):
        assert word in text
    args = parser.parse_args(["bench", "speed"])
    assert args.func.__name__ == "handler(patchprune.bench.speed:_run)"
    assert callable(args.func)


def test_handler_imports_on_call_and_checks_its_target():
    calls = handler("json:dumps")
    assert calls([1]) == "[1]"
    with pytest.raises(ValueError, match="module:function"):
        handler("patchprune.bench.speed")


def test_metrics_names_stay_the_functions_after_submodule_imports():
    import patchprune.metrics.flops  # noqa: F401  (the submodule; must not rebind the package name)
    import patchprune.metrics.ioi  # noqa: F401
    from patchprune.metrics import coverage_radius, flops, ioi
    from patchprune.select.coverage import coverage_radius as engine_radius

    assert callable(flops) and callable(ioi) and flops.__name__ == "flops" and ioi.__name__ == "ioi"
    assert coverage_radius is engine_radius
