"""The `patchprune` command.

Each command family lives in its own module and registers its sub-commands here through
`register(groups)`, so adding a command never means editing a central switch. A sub-command sets
`func=callable(args) -> int | None` with `parser.set_defaults`.

Rule for a command module (keeps `patchprune --help` under a second; tests/test_cli_startup.py checks
it): building the parser imports every module in `COMMAND_MODULES`, so such a module imports at its
top only the standard library and torch-free patchprune modules -- never torch, timm, transformers,
matplotlib, av, pycocotools (nor a patchprune module that imports them). Two easy ways:
- name the handler lazily: `p.set_defaults(func=handler("patchprune.bench.speed:_run"))` imports
  `patchprune.bench.speed` only when the command runs (registration in a small `commands.py`);
- or import the heavy modules inside the handler function of the command module itself.
Validate options in the handler (or an argparse `type=`) before any heavy work starts.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, NoReturn, Sequence

# Modules that contribute commands; each exposes `register(groups: CommandGroups) -> None` and follows
# the lazy-import rule above.
COMMAND_MODULES: tuple[str, ...] = (
    "patchprune.bench.commands",
    "patchprune.bench.ivs",
    "patchprune.bench.mllm",
    "patchprune.bench.vis",
    "patchprune.fgseg.commands",
    "patchprune.data.commands",
    "patchprune.ivs.commands",
    "patchprune.metrics.commands",
    "patchprune.vis.commands",
)


def handler(target: str) -> Callable[[argparse.Namespace], int | None]:
    """A command handler given as "module:function", imported only when the command runs."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"handler target must be 'module:function', got {target!r}")

    def run(args: argparse.Namespace) -> int | None:
        return getattr(importlib.import_module(module), name)(args)

    run.__qualname__ = run.__name__ = f"handler({target})"
    return run


@dataclass
class CommandGroups:
    """Sub-parser collections a command module may add to."""

    root: argparse._SubParsersAction
    bench: argparse._SubParsersAction
    data: argparse._SubParsersAction
    eval: argparse._SubParsersAction
    train: argparse._SubParsersAction | None = None


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a bad type, a missing option) as one line, like every other user
    error: `patchprune <command>: error: ...`, exit 2, no usage block (`--help` still shows it).
    Sub-parsers inherit the class through `add_subparsers`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser: root groups, then every `COMMAND_MODULES` entry's `register(groups)`."""
    parser = OneLineParser(
        prog="patchprune",
        description="Patch-token pruning for vision transformers on dense prediction.",
    )
    root = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = root.add_parser("bench", help="speed and accuracy benchmarks").add_subparsers(
        dest="bench_command", metavar="BENCH", required=True
    )
    data = root.add_parser("data", help="generate or convert data sets").add_subparsers(
        dest="data_command", metavar="DATA", required=True
    )
    evaluate = root.add_parser("eval", help="evaluate predictions").add_subparsers(
        dest="eval_command", metavar="EVAL", required=True
    )
    train = root.add_parser("train", help="train models").add_subparsers(
        dest="train_command", metavar="TRAIN", required=True
    )
    groups = CommandGroups(root=root, bench=bench, data=data, eval=evaluate, train=train)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(groups)
    return parser


# Errors that mean "the input is wrong", not "the code is wrong": one line and exit 2 at the command
# line. ValueError covers validation, JSON decode (json.JSONDecodeError) and text decode errors; the
# OSErrors are paths the user gave. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
                                                NotADirectoryError, PermissionError)


def user_error_line(err: BaseException) -> str:
    """`patchprune: error: <message>` on one line (newlines of multi-line messages folded)."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return f"patchprune: error: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user error (`USER_ERRORS`) prints one line on stderr and returns 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = func(args)
    except USER_ERRORS as err:
        print(user_error_line(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("patchprune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
