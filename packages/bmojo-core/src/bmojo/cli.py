"""The ``bmojo`` command. Each subcommand lives in its own module exposing ``register(subparsers)``;
modules are imported only when listed here, so a slow import never taxes the other commands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: Modules that contribute subcommands, in the order ``bmojo --help`` lists them.
COMMAND_MODULES = [
    "bmojo.jobs.train",
    "bmojo.jobs.generate",
    "bmojo.jobs.eval_length",
    "bmojo.jobs.mqar",
    "bmojo.jobs.demo",
    "bmojo.backends.cli",
]


def build_parser() -> argparse.ArgumentParser:
    from bmojo import __version__

    parser = argparse.ArgumentParser(prog="bmojo", description="B'MOJO: eidetic + fading memory sequence models")
    parser.add_argument("--version", action="version", version=f"bmojo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from bmojo.backends.registry import BackendError  # light: no torch, no plugins

    errors = (ValueError, FileNotFoundError, FloatingPointError, BackendError)  # they name the argument
    return run_command(f"bmojo {args.command}", lambda: args.func(args), errors)


def run_command(name: str, fn, errors: tuple[type[BaseException], ...]) -> int:
    """Run a command's ``fn()`` and map how it ends to an exit status: its return value (None: 0);
    ``errors`` (which name their argument) as one ``"<name>: error: ..."`` line, 2; Ctrl-C a
    message, 130; a closed pipe (``| head``) quietly, 141. Shared by ``bmojo`` and ``bmojo-mlx``."""
    try:
        return int(fn() or 0)
    except errors as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a message, not a traceback (finished work is kept on disk)
        print(f"\n{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`bmojo generate | head`): stop quietly, as cat does
        # the interpreter flushes stdout again at exit; point it at devnull so that flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the shell's status for a process the pipe ended


if __name__ == "__main__":
    sys.exit(main())
