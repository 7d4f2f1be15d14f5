"""One lazy-import helper for every mmgap package ``__init__``.

A package lists which module each public name lives in; the name is imported on first access, so
importing the package itself stays cheap (``import mmgap_core`` needs numpy only).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_module"]


def lazy_module(
    package: str,
    names: Mapping[str, str],
    *,
    eager: Iterable[str] = (),
    missing_hint: Callable[[ModuleNotFoundError], str | None] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's module-level ``__getattr__`` and ``__dir__`` from a name -> module map.

    Parameters
    ----------
    package : str
        The package's ``__name__``; relative module names are resolved against it.
    names : mapping of str to str
        Public name -> module that defines it, e.g. ``{"RetrievalEngine": ".engine"}``. A module
        given with a leading dot is relative to ``package``.
    eager : iterable of str, optional
        Public names the package defines itself; ``__dir__`` lists them with the lazy ones.
    missing_hint : callable, optional
        Called with the ``ModuleNotFoundError`` raised while importing a module; a string it returns
        is raised as an ``ImportError`` with that message instead (e.g. which extra to install).

    Returns
    -------
    (__getattr__, __dir__)
        Assign them in the package: ``__getattr__, __dir__ = lazy_module(__name__, {...})``. A
        loaded name is cached in the package's namespace, so ``__getattr__`` runs once per name.

    Examples
    --------
    >>> __getattr__, __dir__ = lazy_module(  # doctest: +SKIP
    ...     __name__, {"ChromaStore": ".store.chroma"}
    ... )
    """
    table = dict(names)
    listed = sorted(set(table) | set(eager))

    def __getattr__(name: str) -> Any:
        module_name = table.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(module_name, package), name)
        except ModuleNotFoundError as exc:
            hint = missing_hint(exc) if missing_hint is not None else None
            if hint:
                raise ImportError(hint) from exc
            raise
        importlib.import_module(package).__dict__[name] = value  # later lookups skip this hook
        return value

    def __dir__() -> list[str]:
        return list(listed)

    return __getattr__, __dir__
