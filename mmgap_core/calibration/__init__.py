"""Calibration: the record the statistics live in, and how it is fitted from a store.

* :mod:`~mmgap_core.calibration.record`: :class:`CalibrationRecord` (statistics, center means,
  corpus sizes, provenance) with its schema-checked ``to_dict``/``from_dict`` and JSON files.
* :mod:`~mmgap_core.calibration.fitting`: calibration queries, exact and through-the-store mining,
  and :func:`query_best_hits`, the self-excluded best hit per modality.
"""

from __future__ import annotations

from .fitting import (
    QuerySet,
    fit_calibration,
    query_best_hits,
    sample_query_sets,
)
from .record import (
    CALIBRATION_FORMAT,
    CALIBRATION_VERSION,
    CalibrationFormatError,
    CalibrationRecord,
    NotCalibratedError,
    Provenance,
    read_calibration_file,
    write_calibration_file,
)

__all__ = [
    "CALIBRATION_FORMAT",
    "CALIBRATION_VERSION",
    "CalibrationFormatError",
    "CalibrationRecord",
    "NotCalibratedError",
    "Provenance",
    "QuerySet",
    "fit_calibration",
    "query_best_hits",
    "read_calibration_file",
    "sample_query_sets",
    "write_calibration_file",
]
