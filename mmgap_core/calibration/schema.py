"""The ``mmgap.calibration`` schema: every field checked before a record is built.

Each check raises :class:`CalibrationFormatError` with one line that names the field and what is
wrong with it; values are described safely (a container is never printed, so deeply nested or huge
input cannot blow up the message).
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

import numpy as np

from ..stats import FORMAT_NAME as STANDARDIZER_FORMAT
from ..stats import FORMAT_VERSION as STANDARDIZER_VERSION
from ..stats import ModalityStandardizer

__all__ = ["CalibrationFormatError"]


class CalibrationFormatError(ValueError):
    """Calibration data does not follow the ``mmgap.calibration`` schema; the message says where."""


def fail(message: str) -> NoReturn:
    """Raise :class:`CalibrationFormatError` with ``message``, prefixed with where it comes from."""
    raise CalibrationFormatError(f"calibration data: {message}")


def describe(value: Any) -> str:
    """A short, safe description of a JSON value (never the repr of a container)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    return type(value).__name__


def _name(value: str | int | None) -> str:
    return "null" if value is None else repr(value)


def _check_fitted_for(what: str, quantity: str, fitted: Any, recorded: Any) -> None:
    """Fail when ``what`` was fitted for another ``quantity`` (model, dimension) than the record."""
    if fitted != recorded:
        fail(
            f"the {what} was fitted for {quantity} {_name(fitted)} but the record is for "
            f"{quantity} {_name(recorded)}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any, where: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        fail(f"{where} must be a finite number, got {describe(value)}")
    return float(value)


def _int(value: Any, where: str, *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        fail(f"{where} must be {kind}, got {describe(value)}")
    return int(value)


def _label(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        fail(f"{where} must be a non-empty string, got {describe(value)}")
    return value


def opt_str(data: dict, key: str, where: str | None = None) -> str | None:
    """``data[key]``: a string or null (missing is null)."""
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        fail(f"{where or key} must be a string or null, got {describe(value)}")
    return value


def opt_positive_int(data: dict, key: str, where: str) -> int | None:
    """``data[key]``: a positive integer or null (missing is null)."""
    value = data.get(key)
    return None if value is None else _int(value, where, minimum=1)


def counts(value: Any, where: str, *, optional: bool) -> dict[str, int]:
    """An object mapping modality labels to non-negative integer counts."""
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        fail(f"{where} must be an object mapping modality to a count, got {describe(value)}")
    return {
        _label(m, f"{where} key"): _int(n, f"{where}[{m!r}]", minimum=0) for m, n in value.items()
    }


def mining_agreement(value: Any) -> dict[str, dict] | None:
    """Null, or ``{"queries": counts, "top1": shares in [0, 1], "score_shortfall": numbers}``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        fail(f"mining_agreement must be null or an object, got {describe(value)}")
    unknown = sorted(set(value) - {"queries", "top1", "score_shortfall"})
    if unknown:
        fail(f"mining_agreement has unknown field {unknown[0]!r}")
    out: dict[str, dict] = {
        "queries": counts(value.get("queries"), "mining_agreement.queries", optional=True)
    }
    for part in ("top1", "score_shortfall"):
        rows = value.get(part, {})
        if not isinstance(rows, dict):
            fail(f"mining_agreement.{part} must be an object, got {describe(rows)}")
        where = f"mining_agreement.{part}"
        out[part] = {
            _label(k, f"{where} key"): _finite(v, f"{where}[{k!r}]") for k, v in rows.items()
        }
        if part == "top1" and any(not 0 <= v <= 1 for v in out[part].values()):
            fail("mining_agreement.top1 shares must be between 0 and 1")
    return out


def center_means(value: Any, dim: int | None) -> dict[str, np.ndarray] | None:
    """Null, or mean vectors per modality: finite numbers, one width (``dim`` when known)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        fail(f"center_means must be null or an object of mean vectors, got {describe(value)}")
    means, width = {}, dim
    for m, vec in value.items():
        where = f"center_means[{_label(m, 'center_means key')!r}]"
        if not isinstance(vec, list) or not vec or not all(map(_is_number, vec)):
            fail(f"{where} must be a non-empty list of numbers, got {describe(vec)}")
        arr = np.asarray(vec, dtype=np.float64)
        if not np.isfinite(arr).all():
            fail(f"{where} contains NaN or inf")
        if width is not None and arr.shape[0] != width:
            fail(f"{where} has {arr.shape[0]} values, expected {width}")
        width = arr.shape[0]
        means[m] = arr
    return means


def center_directions(value: Any, dim: int | None) -> dict[str, np.ndarray] | None:
    """Null, or per modality a list of unit direction vectors of one width (``dim`` if known)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        fail(f"center_directions must be null or an object, got {describe(value)}")
    out = {}
    for m, rows in value.items():
        where = f"center_directions[{_label(m, 'center_directions key')!r}]"
        if not isinstance(rows, list) or not all(
            isinstance(r, list) and r and all(map(_is_number, r)) for r in rows
        ):
            fail(f"{where} must be a list of lists of numbers, got {describe(rows)}")
        arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1 if rows else dim or 0)
        if not np.isfinite(arr).all():
            fail(f"{where} contains NaN or inf")
        if dim is not None and arr.shape[1] != dim:
            fail(f"{where} has vectors of {arr.shape[1]} values, expected {dim}")
        if not np.allclose(arr @ arr.T, np.eye(len(arr)), atol=1e-6):
            fail(f"{where} must be orthonormal directions")
        out[m] = arr
    return out


def standardizer(value: Any, model_id: str | None, dim: int | None) -> ModalityStandardizer:
    """A ``mmgap.standardizer`` object fitted for the record's own model and dimension."""
    if not isinstance(value, dict):
        fail(f"standardizer must be an object, got {describe(value)}")
    if value.get("format") != STANDARDIZER_FORMAT or value.get("version") != STANDARDIZER_VERSION:
        fail(f"standardizer is not {STANDARDIZER_FORMAT!r} version {STANDARDIZER_VERSION} data")
    std_model = opt_str(value, "model_id", "standardizer.model_id")
    _check_fitted_for("standardizer", "model", std_model, model_id)
    std_dim = opt_positive_int(value, "dim", "standardizer.dim")
    _check_fitted_for("standardizer", "dimension", std_dim, dim)
    if "min_std" in value and (_finite(value["min_std"], "standardizer.min_std") <= 0):
        fail("standardizer.min_std must be positive")
    rows = value.get("stats")
    if not isinstance(rows, list) or not rows:
        fail(f"standardizer.stats must be a non-empty list, got {describe(rows)}")
    seen = set()
    for i, row in enumerate(rows):
        where = f"standardizer.stats[{i}]"
        if not isinstance(row, dict):
            fail(f"{where} must be an object, got {describe(row)}")
        key = (
            _label(row.get("query_modality"), f"{where}.query_modality"),
            _label(row.get("candidate_modality"), f"{where}.candidate_modality"),
        )
        if key in seen:
            fail(f"{where} repeats the statistics of {key}")
        seen.add(key)
        _int(row.get("count"), f"{where}.count", minimum=1)
        _finite(row.get("mean"), f"{where}.mean")
        if _finite(row.get("m2"), f"{where}.m2") < 0:
            fail(f"{where}.m2 must be >= 0")
        if "std" in row and row["std"] is not None:
            _finite(row["std"], f"{where}.std")
        if "fallback" in row and not isinstance(row["fallback"], bool):
            fail(f"{where}.fallback must be a boolean, got {describe(row['fallback'])}")
    try:
        return ModalityStandardizer.from_dict(value)
    except (ValueError, TypeError, OverflowError) as exc:  # pragma: no cover - checked above
        fail(f"standardizer: {exc}")


def background_scale(value: Any, model_id: str | None, dim: int | None):
    """Null, or a ``mmgap.background_scale`` object fitted for the record's model and dimension."""
    from ..background import BackgroundScale

    return _fitted_scale(
        value, "background_scale", "background scale", BackgroundScale, model_id, dim
    )


def centered_scale(value: Any, model_id: str | None, dim: int | None):
    """Null, or a ``mmgap.centered_background_scale`` object fitted for the record's model/dim."""
    from ..centered_background import CenteredBackgroundScale

    return _fitted_scale(
        value,
        "centered_background_scale",
        "centred background scale",
        CenteredBackgroundScale,
        model_id,
        dim,
    )


def _fitted_scale(value: Any, field: str, what: str, cls, model_id: str | None, dim: int | None):
    """Null, or ``cls.from_dict(value)`` once its model and dimension match the record's."""
    if value is None:
        return None
    if not isinstance(value, dict):
        fail(f"{field} must be null or an object, got {describe(value)}")
    _check_fitted_for(what, "model", opt_str(value, "model_id", f"{field}.model_id"), model_id)
    _check_fitted_for(what, "dimension", value.get("dim"), dim)
    try:
        return cls.from_dict(value)
    except (ValueError, TypeError, OverflowError, ZeroDivisionError) as exc:
        fail(str(exc))
