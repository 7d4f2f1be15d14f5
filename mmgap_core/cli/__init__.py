"""The `mmgap` command line. Each subcommand lives in its own module with a ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, imported when the parser is built; heavy libraries load only when a command runs.
_COMMAND_MODULES = (
    "mmgap_core.cli.eval_cmd",
    "mmgap_core.cli.bench_cmd",
    "mmgap_core.cli.store_cmds",
    "mmgap_core.cli.demo_cmd",
    "mmgap_core.cli.reproduce_cmd",
)


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmgap",
        description="Mixed text+image retrieval that ranks correctly (modality-gap standardization).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a subcommand not shipped in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CommandError, ValueError, FileNotFoundError) as exc:
        print(f"mmgap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
