"""The shared registry: one entry per name, clear errors."""
import pytest

from patchprune.registry import Registry
from patchprune.select import available_methods, method_spec


def test_registry_adds_looks_up_and_rejects_misuse():
    reg: Registry[int] = Registry("widget")

    @reg.register("b")
    def make_b():
        return 2

    reg.add("a", 1)
    assert reg.get("b") is make_b and reg.get("a") == 1
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and "a" in reg and "c" not in reg
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.add("a", 3)
    with pytest.raises(ValueError, match=r"unknown widget 'c'; available: a, b"):
        reg.get("c")


def test_selection_methods_use_it():
    assert {"evtp", "kcenter", "divprune", "tome", "random"} <= set(available_methods())
    assert method_spec("evtp").needs_grid
    with pytest.raises(ValueError, match="unknown selection method 'nope'"):
        method_spec("nope")
