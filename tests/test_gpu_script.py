"""benchmarks/gpu/check.sh (issue 10's prepared GPU run) stays runnable: its patchprune commands parse
with the current CLI and the test files it names exist. It only runs where a GPU is lent."""
import glob
import re
import shlex
from pathlib import Path

from patchprune.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "check.sh"


def _commands() -> list[list[str]]:
    text = SCRIPT.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if "-m patchprune.cli" in line:
            words = shlex.split(line.split("-m patchprune.cli", 1)[1], comments=True)
            cut = [i for i, w in enumerate(words) if re.match(r"(\||;|&&|\d?>)", w)]  # redirections, pipes
            out.append(words[:cut[0]] if cut else words)
    return out


def test_every_patchprune_command_of_the_gpu_script_parses():
    commands = _commands()
    assert len(commands) == 4
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        assert args.device == "cuda" and callable(args.func)


def test_the_gpu_script_names_existing_tests():
    names = re.findall(r"tests/\S+\.py", SCRIPT.read_text())
    assert names
    for name in names:
        assert glob.glob(str(SCRIPT.parents[2] / name)), name
