"""Writing a matplotlib figure the way every benchmark script does: tight layout, the folder made, one line said."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Lay out `fig`, write it to `path` (parent folders created) and print where it went."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    print(f"wrote {path}")
    return path
