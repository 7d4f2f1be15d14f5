"""Small helpers shared by subcommands: the parser and help classes, argument types, method help.

Nothing here imports numpy, torch or chromadb: building the parser (and ``--help``) stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .._paths import nearest_existing_parent

__all__ = [
    "CommandError",
    "HelpFormatter",
    "Parser",
    "add_method_arg",
    "check_output_path",
    "method_epilog",
    "method_unit",
    "parse_ks",
    "parse_where",
    "positive_int",
    "print_notes",
]


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line on stderr, exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit with status 2."""
        text = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {text} (see `{self.prog} --help`)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help text with each default shown once, and descriptions/epilogs kept as written.

    A default is appended as ``(default: X)`` only when it says something: not for ``None``,
    ``False`` or an empty list, and not when the help text already speaks of its default.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=_help_width())

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # One-paragraph texts are wrapped; texts laid out over several lines are kept as written.
        if "\n" in text.strip():
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text.lower()
            or default in (None, False, argparse.SUPPRESS, [])
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


def _help_width() -> int:
    import shutil

    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 110)) - 2


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_ks(spec: str) -> tuple[int, ...]:
    """``"1,5,10"`` -> ``(1, 5, 10)``: sorted, unique, positive cut-offs."""
    try:
        ks = tuple(sorted({int(x) for x in spec.split(",") if x.strip()}))
    except ValueError:
        raise ValueError(f"--k: expected comma-separated positive integers, got {spec!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--k: expected comma-separated positive integers, got {spec!r}")
    return ks


def parse_where(text: str | None) -> dict | None:
    """``--where`` JSON: a non-empty object (Chroma checks its operators), or None."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CommandError(f"--where is not valid JSON ({exc})") from None
    if not isinstance(value, dict) or not value:
        raise CommandError(
            '--where must be a JSON object such as \'{"source": "a.txt"}\', got '
            f"{type(value).__name__ if not isinstance(value, dict) else 'an empty object'}"
        )
    return value


def check_output_path(path: str | None, flag: str) -> None:
    """Fail before any work when ``path`` (an output file of ``flag``) cannot be written."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise CommandError(f"{flag} {path}: is a folder; give a file name")
    parent = nearest_existing_parent(p)
    if not parent.is_dir():
        raise CommandError(f"{flag} {path}: {parent} is not a folder")


# ---------------------------------------------------------------------------- fusion methods
def method_lines() -> list[str]:
    """One line per fusion method (``fusion.method_help()``), the default marked."""
    from ..fusion import DEFAULT_METHOD, method_help

    out = []
    for line in method_help().splitlines():
        name = line.split(maxsplit=1)[0] if line.strip() else ""
        if name == DEFAULT_METHOD and "default" not in line:
            line += "  (default)"
        out.append(line)
    return out


def method_epilog(flag: str = "--method", *, search: bool = True) -> str:
    """The ``--help`` epilog listing every fusion method with its one-line summary."""
    from ..fusion import DEFAULT_METHOD

    lines = [f"fusion methods ({flag}; default {DEFAULT_METHOD}):"]
    lines += [f"  {line}" for line in method_lines()]
    if search:
        lines.append("  (standardize-gold needs labelled pairs: `mmgap eval` only)")
    return "\n".join(lines)


def add_method_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--method NAME`` checked against the registry, default the library's default."""
    from ..fusion import DEFAULT_METHOD, METHOD_NAMES

    p.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=[m for m in METHOD_NAMES if m != "standardize-gold"],
        metavar="NAME",
        help=f"{help_text} (default: {DEFAULT_METHOD}; the methods are listed below)",
    )


def method_unit(name: str) -> str:
    """The unit of ``name``'s scores in a few words (``METHODS[name].unit``)."""
    from ..fusion import METHODS

    return str(getattr(METHODS.get(name), "unit", "") or "score")


# ---------------------------------------------------------------------------- notes
_GROWTH = "corpus grew since calibration:"


def print_notes(notes, *, file=None) -> None:
    """Print each note once as ``note: ...``; the growth note names the command that fixes it."""
    out = file or sys.stdout
    seen = set()
    for note in notes:
        text = " ".join(str(note).split())
        if text.startswith(_GROWTH):
            text = (
                f"the corpus grew since calibration ({text[len(_GROWTH) :].strip()}): run "
                "`mmgap calibrate` to refit the statistics"
            )
        if text not in seen:
            seen.add(text)
            print(f"note: {text}", file=out)
