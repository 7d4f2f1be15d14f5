"""The fusion method a search runs: built from the calibration record, reused while it can be.

Building a method costs more than a search's fusion (it validates and converts what it is given),
so the engine keeps the last one built. A method reads no more than the record's objects it is
given and whether they are fitted: one built from the same objects (by identity), the same corpus
sizes and an equal method name is reused. A recalibration, an import or an online update that
replaces an object builds a new one.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

from .calibration.record import CalibrationRecord
from .fusion import FusionMethod, make_method

__all__ = ["MethodCache"]


class MethodCache:
    """Builds a search's fusion method from what it declares it needs; keeps the last one.

    Not locked: a search that races another at worst builds an equal method twice.
    """

    def __init__(self):
        self._entry: tuple | None = None  # (what it was built from, method, its name)

    @property
    def last(self) -> FusionMethod | None:
        """The method the last :meth:`get` returned (``None`` before the first)."""
        return None if self._entry is None else self._entry[1]

    def get(
        self,
        name: str,
        cls: type[FusionMethod],
        record: CalibrationRecord | None,
        counts: Mapping[str, int],
    ) -> FusionMethod:
        """``name`` (of class ``cls``) built from ``record``'s parts it needs and ``counts``."""
        std = record.standardizer if record is not None else None
        bg = record.background if record is not None else None
        parts = dict(
            standardizer=std,
            background_scale=bg,
            center_means=record.center_means if cls.needs_center_means else None,
            centered_scale=record.centered if cls.needs_centered_scale else None,
            center_directions=record.center_directions if cls.needs_centered_scale else None,
            corpus_sizes=counts,
        )
        key = (*parts.values(), std is not None and std.is_fitted, bg is not None and bg.is_fitted)
        cached = self._entry
        if cached is not None and cached[2] == name and all(map(operator.is_, cached[0], key)):
            return cached[1]
        method = make_method(name, **parts)
        self._entry = (key, method, name)
        return method
