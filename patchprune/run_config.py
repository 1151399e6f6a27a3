"""The run-folder config both systems share: `RUN/config.json`, its JSON round trip (unknown fields
refused), atomic save, load with an error naming the file, and the shape fingerprint that keeps a
checkpoint from loading into another architecture. `vis.config.VISConfig` and
`ivs.config.IVSConfig` are dataclasses on top of it."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Self

from patchprune.data.io import read_json, write_json
from patchprune.validate import check_known_fields

CONFIG_FILE = "config.json"


class RunConfig:
    """Mixin for a dataclass config. Subclasses set KIND (the name in error messages), COMMAND (what
    writes such run folders) and NOT_SHAPE (fields no tensor shape depends on), and define
    `validate() -> Self`."""

    KIND: ClassVar[str] = "run"
    COMMAND: ClassVar[str] = "patchprune train"
    NOT_SHAPE: ClassVar[tuple[str, ...]] = ("name",)

    def validate(self) -> Self:
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        check_known_fields(f"{cls.KIND} config field", cls, data)
        return cls(**data).validate()

    def save(self, folder: str | Path) -> Path:
        """Write `folder/config.json` atomically."""
        return write_json(Path(folder) / CONFIG_FILE, self.to_json(), indent=2)

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """Read `folder/config.json` (FileNotFoundError naming the file when it is missing)."""
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass a run folder written by `{cls.COMMAND}`")
        return cls.from_json(read_json(path, f"{cls.KIND} config"))

    def shape_differences(self, other: "RunConfig") -> str:
        """The shape fields where `other` differs, as "field: theirs -> ours" ("" when none)."""
        ours, theirs = self.to_json(), other.to_json()
        return "; ".join(f"{k}: {theirs.get(k)!r} -> {v!r}" for k, v in sorted(ours.items())
                         if k not in self.NOT_SHAPE and theirs.get(k) != v)

    def fingerprint(self) -> str:
        """The fields that shape the tensors (a checkpoint of another config does not load)."""
        return json.dumps({k: v for k, v in self.to_json().items() if k not in self.NOT_SHAPE}, sort_keys=True)
