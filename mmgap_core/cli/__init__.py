"""The ``mmgap`` command line; each subcommand lives in a module with a ``register(subparsers)``.

Error contract: every failure a user can cause prints ONE line on stderr,
``mmgap COMMAND: error: ...``, and exits with status 2 (usage errors included); Ctrl-C exits 130;
an unexpected failure prints one line too, exit status 1. ``--debug`` (before or after the
command name) shows the traceback instead. Python warnings and library log warnings become
``note: ...`` lines, each printed once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from ._common import CommandError, HelpFormatter, Parser

__all__ = ["CommandError", "build_parser", "main"]

# Subcommand modules, imported when the parser is built; heavy libraries load when a command runs.
_COMMAND_MODULES = (
    "mmgap_core.cli.eval_cmd",
    "mmgap_core.cli.bench_cmd",
    "mmgap_core.cli.store_cmds",
    "mmgap_core.cli.demo_cmd",
    "mmgap_core.cli.reproduce_cmd",
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that are the user's to fix: one line, exit status 2."""
    from ..encoders.base import WeightsUnavailableError
    from ..store.errors import StoreUnavailableError

    # StoreUnavailableError is a ConnectionError (an OSError); named for clarity.
    return (
        CommandError,
        ValueError,
        OSError,
        StoreUnavailableError,
        WeightsUnavailableError,
        ImportError,
        RecursionError,
        MemoryError,
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``mmgap`` parser with every subcommand this build ships."""
    parser = Parser(
        prog="mmgap",
        description="Mixed text+image retrieval that ranks correctly (modality-gap correction "
        "over a Chroma store).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
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
    for p in set(sub.choices.values()):
        p.formatter_class = HelpFormatter
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the Python traceback of an error",
        )
    return parser


class _NoteHandler(logging.Handler):
    """Library log warnings as ``note: ...`` lines on stderr, each once."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())
        except Exception:  # noqa: BLE001 - a malformed log call must not kill the command
            return
        if text and text not in self.seen:
            self.seen.add(text)
            print(f"note: {text}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the CLI: ``note: MESSAGE``, each message once."""
    text = " ".join(str(message).split())
    shown = _show_warning.__dict__.setdefault("seen", set())
    if text and text not in shown:
        shown.add(text)
        print(f"note: {text}", file=sys.stderr)


def _setup_output(debug: bool) -> tuple[logging.Handler, object, int]:
    """Route warnings and log records to ``note:`` lines; returns what to restore after."""
    handler = _NoteHandler()
    root = logging.getLogger()
    level = root.level
    if debug:
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    previous = warnings.showwarning
    _show_warning.__dict__["seen"] = set()
    warnings.showwarning = _show_warning
    return handler, previous, level


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``mmgap ... | head``): exit quietly.

    Python's documented recipe: point stdout at devnull so that the interpreter's final flush
    does not raise again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run ``mmgap`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BrokenPipeError:  # `mmgap --help | head -1`
        return _quiet_broken_pipe()
    debug = bool(getattr(args, "debug", False))
    handler, previous_showwarning, root_level = _setup_output(debug)
    prefix = f"mmgap {args.command}"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            status = int(args.func(args) or 0)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if debug:
            raise
        print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the one-line contract holds for bugs too
        if debug:
            raise
        if type(exc).__module__.startswith("chromadb.errors"):  # Chroma refused the request
            print(f"{prefix}: error: Chroma: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(
            f"{prefix}: internal error ({type(exc).__name__}): {_one_line(exc)}; rerun with "
            "--debug for the traceback, and please report it",
            file=sys.stderr,
        )
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)
        warnings.showwarning = previous_showwarning


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
