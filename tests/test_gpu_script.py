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


def test_the_gpu_script_names_existing_tests_and_scripts():
    names = re.findall(r"(?:tests|benchmarks)/\S+\.py", SCRIPT.read_text())
    assert any(n.startswith("tests/") for n in names) and "benchmarks/gpu/strategies.py" in names
    for name in names:
        assert glob.glob(str(SCRIPT.parents[2] / name)), name


def test_the_strategies_script_dry_runs_on_the_cpu(capsys):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("strategies", SCRIPT.parent / "strategies.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--device", "cpu", "--quick", "--repeats", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["device"] == "cpu" and len(res["rows"]) == 6
    assert all(r["same_picks"] and r["matrix_ms"] > 0 and r["pool_ms"] > 0 for r in res["rows"])


def test_the_gpu_script_leaves_at_most_eight_files():
    """The device tool brings back at most 8 files from $OUT: the script must not write more."""
    names = set(re.findall(r'"\$OUT/([\w.-]+)"', SCRIPT.read_text()))
    assert 0 < len(names) <= 8, sorted(names)
