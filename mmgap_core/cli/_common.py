"""Small helpers shared by subcommands."""

from __future__ import annotations


def parse_ks(spec: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(x) for x in spec.split(",") if x.strip()}))
    except ValueError:
        raise ValueError(f"--k: expected comma-separated positive integers, got {spec!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--k: expected comma-separated positive integers, got {spec!r}")
    return ks
