"""A named registry: the one mechanism behind the policy, selection-method and learned-method families.

Each family keeps one `Registry`; a new method is one new file whose decorator adds it. Names are
unique per family, and a lookup of an unknown name says what is available. `import_family(package)`
imports every module of a family's package, so a new file registers without any list to edit.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> entry, filled by `register(name)` decorators, with clear errors on misuse."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "policy", "selection method", ... (used in error messages)
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register `entry` under `name` (a ValueError if the name is taken); returns the entry."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: add the decorated object under `name` and return it unchanged."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        """The entry of `name`, or a ValueError listing the available names."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_family(package: str, skip: tuple[str, ...] = ()) -> None:
    """Import every module of `package` but `skip` (each registers its entries on import); idempotent."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
