"""Reference VIS checkpoints shipped with the package, loaded by name, each file hash-checked.

    patchprune/weights/manifest.json          {"format": 1, "checkpoints": {name: entry}}
    patchprune/weights/<file>.safetensors     fp16 weights, `train.checkpoint` layout ("module/model/...",
                                              "module/policies/..." for a pruned model); no optimiser
    patchprune/weights/<file>.json            the VIS config, method, target, the generated data set it was
                                              trained on, training settings and time, its metrics

An entry names its two files and their SHA-256; a file whose hash differs is refused before any
byte of it is parsed (a changed or truncated download must not silently give another model).
`load_reference(name)` rebuilds the model with `patchprune.vis`'s own parts (`VISConfig`,
`VISModel`, `build_encoder`, `load_checkpoint`) and returns it in eval mode with the method's pruner.
The files are written by `patchprune.checkpoints_export.export_reference`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchprune.data.io import read_json

if TYPE_CHECKING:  # heavy imports only where a model is built
    from torch import nn

    from patchprune.vis.model import VISModel
    from patchprune.vis.predict import VideoPredictor

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(root: str | Path | None = None) -> dict[str, Any]:
    """The manifest of a weights folder (default: the package's); ValueError when malformed."""
    root = Path(root) if root is not None else WEIGHTS_DIR
    data = read_json(root / MANIFEST, "reference checkpoint manifest")
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("checkpoints"), dict):
        raise ValueError(f"{root / MANIFEST}: not a format-{MANIFEST_FORMAT} manifest "
                         "(write it with scripts/export_reference_checkpoints.py)")
    return data


def reference_names(root: str | Path | None = None) -> list[str]:
    """Names of the shipped reference checkpoints, e.g. ["dense", "vpp-0.55", "vpp-0.40"]."""
    return list(read_manifest(root)["checkpoints"])


def _entry(name: str, root: str | Path | None) -> dict[str, Any]:
    entries = read_manifest(root)["checkpoints"]
    if name not in entries:
        raise ValueError(f"unknown reference checkpoint {name!r}; available: {', '.join(entries)}")
    return entries[name]


def verified_path(name: str, kind: str, root: str | Path | None = None) -> Path:
    """Path of the `kind` ("weights" or "config") file of reference `name`, after its SHA-256 check."""
    root = Path(root) if root is not None else WEIGHTS_DIR
    entry = _entry(name, root)
    path = root / entry[kind]
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint {name!r}: {path} is missing; reinstall patchprune")
    expected = entry["sha256"][entry[kind]]
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"reference checkpoint {name!r}: {path} has SHA-256 {actual[:16]}..., the manifest says "
                         f"{expected[:16]}...: the file was changed or is damaged; reinstall patchprune (or "
                         "re-export it with scripts/export_reference_checkpoints.py)")
    return path


def reference_info(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """The hash-checked JSON of reference `name`: vis_config, method, target, data, training, metrics."""
    return read_json(verified_path(name, "config", root), f"reference checkpoint {name!r} config")


@dataclass
class Reference:
    """A loaded reference checkpoint: the VIS model, its pruner (None when dense), its JSON info."""

    name: str
    model: "VISModel"
    encoder: "nn.Module | None"
    info: dict[str, Any]

    @property
    def method(self) -> str:
        return str(self.info["method"])

    @property
    def target(self) -> float | None:
        return self.info.get("target")

    def predictor(self, tracker: str = "minvis") -> "VideoPredictor":
        """A fresh batch-1 streaming predictor (one per video)."""
        from patchprune.vis.predict import VideoPredictor

        return VideoPredictor(self.model, self.encoder, tracker)


def load_reference(name: str, root: str | Path | None = None) -> Reference:
    """Load reference checkpoint `name` (see `reference_names()`), hash-checked, in eval mode, its pruner
    rebuilt as it was trained (method, target, module positions and options of its training settings)."""
    from patchprune.vis.config import VISConfig
    from patchprune.vis.run import load_weights

    info = reference_info(name, root)
    settings = {**((info.get("training") or {}).get("settings") or {}), "method": info["method"],
                "target": info.get("target")}
    loaded = load_weights(VISConfig.from_json(info["vis_config"]), settings, verified_path(name, "weights", root))
    return Reference(name, loaded.model, loaded.encoder, info)  # fp16 tensors were cast to fp32 on load


__all__ = ["WEIGHTS_DIR", "Reference", "load_reference", "reference_info", "reference_names", "read_manifest",
           "sha256_file", "verified_path"]
