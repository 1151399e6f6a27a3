"""Every ```python block of README.md and docs/**/*.md runs (issue 13, item 1).

Blocks are found anew on every run, so examples added later are tested without editing this file. A
block that cannot run standalone is marked by the HTML comment `<!-- not-run: reason -->` on the
line(s) right before its fence (blank lines allowed in between); use it sparingly. Each block runs
in a fresh namespace with a temporary working directory, seeded.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\s*$")
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(\S.*?)\s*-->")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line of the fence, code, not-run reason or None) for each ```python block of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            k = start - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            reason = NOT_RUN.search(lines[k]) if k >= 0 else None
            blocks.append((start + 1, "\n".join(lines[start + 1 : j]) + "\n", reason.group(1) if reason else None))
            i = j
        i += 1
    return blocks


EXAMPLES = [(path, line, code, reason) for path in doc_files() for line, code, reason in python_blocks(path)]


def test_examples_are_found():
    names = {path.relative_to(ROOT).as_posix() for path, *_ in EXAMPLES}
    assert "README.md" in names and any(n.startswith("docs/") for n in names)


@pytest.mark.parametrize("path,line,code,reason", EXAMPLES,
                         ids=[f"{p.relative_to(ROOT).as_posix()}:{line}" for p, line, _, _ in EXAMPLES])
def test_doc_example_runs(path, line, code, reason, tmp_path, monkeypatch):
    if reason is not None:
        pytest.skip(f"not-run: {reason}")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace = {"__name__": "__doc_example__"}
    exec(compile(code, f"{path.relative_to(ROOT).as_posix()}:{line}", "exec"), namespace)


def test_block_parser_reads_fences_and_markers(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n```python\na = 1\n```\n<!-- not-run: needs a GPU -->\n\n```python\nb = 2\n```\n"
                   "```bash\nls\n```\n", encoding="utf-8")
    assert python_blocks(doc) == [(2, "a = 1\n", None), (7, "b = 2\n", "needs a GPU")]


def test_readme_quick_start_runs_in_eval_with_gather_execution(monkeypatch, tmp_path):
    """The quick start, copied verbatim, gives an eval runner executing by gather (the real speed-up)."""
    (line, code, _), = [b for b in python_blocks(ROOT / "README.md") if "sparse_vit" in b[1]][:1]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)
    runner = namespace["runner"]
    assert not runner.training and runner.execution_in_force == "gather"
    assert namespace["out"].features.shape[-2:] == (32, 32)
