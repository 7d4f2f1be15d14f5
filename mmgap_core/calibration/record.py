"""The calibration record: statistics, center means, corpus sizes and provenance, in one envelope.

A record is what ``engine.calibrate`` fits, what the store keeps, and what ``export``/``import``
write and read. :meth:`CalibrationRecord.from_dict` checks the whole schema before anything is
built, so a broken file fails with one line that names the problem, and is never stored.
"""

from __future__ import annotations

import json
import logging
import stat
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..background import BackgroundScale
from ..centered_background import CenteredBackgroundScale
from ..post_processing import post_processings, row_centered_cosines
from ..stats import ModalityStandardizer
from . import schema
from .schema import CalibrationFormatError

__all__ = [
    "CALIBRATION_FORMAT",
    "CALIBRATION_VERSION",
    "CalibrationFormatError",
    "CalibrationRecord",
    "NotCalibratedError",
    "Provenance",
    "read_calibration_file",
    "write_calibration_file",
]

logger = logging.getLogger(__name__)

CALIBRATION_FORMAT = "mmgap.calibration"
CALIBRATION_VERSION = 1
#: A calibration file is a few kB (two mean vectors at most); refuse anything absurdly larger.
MAX_FILE_BYTES = 64 * 2**20


class NotCalibratedError(ValueError):
    """The store has no calibration statistics (or none for what a search needs) yet."""


@dataclass(frozen=True)
class Provenance:
    """Where a calibration comes from.

    Attributes
    ----------
    model_id : str or None
        The embedding model the statistics were fitted for.
    dim : int or None
        The embedding dimension.
    source : str or None
        ``"given queries"`` or ``"store sample (self-excluded)"``.
    mining : str or None
        ``"exact"`` or ``"store nearest-neighbour"``.
    fitted_at : str or None
        UTC time of the fit, ISO 8601.
    calibration_queries : dict of str to int
        Calibration queries per query modality.
    mining_agreement : dict or None
        With ``"store nearest-neighbour"`` mining: how often the store's index found the exact
        top-1, measured on a subset of the queries: ``{"queries": {query modality: n}, "top1":
        {"q->m": share}, "score_shortfall": {"q->m": mean cosine missed}}``; else ``None``.
    """

    model_id: str | None = None
    dim: int | None = None
    source: str | None = None
    mining: str | None = None
    fitted_at: str | None = None
    calibration_queries: dict[str, int] = field(default_factory=dict)
    mining_agreement: dict[str, dict] | None = None


@dataclass(eq=False)
class CalibrationRecord:
    """One calibration: what ``standardize`` and ``center`` need, and where it comes from.

    Attributes
    ----------
    standardizer : ModalityStandardizer
        The fitted pseudo-positive statistics.
    corpus_sizes : dict of str to int
        Items per modality at fit time (the growth check compares against them).
    center_means : dict of str to numpy.ndarray or None
        Mean embedding per modality, for the ``center`` method.
    provenance : Provenance
        Model, dimension, query source, mining strategy, time and query counts.
    background : BackgroundScale or None
        Background scales per (query modality, candidate modality), for ``background-z``;
        ``None`` in records written before that method existed.
    centered : CenteredBackgroundScale or None
        Scales of the second view's pools, for ``two-view-z``; ``None`` in records written before
        that method existed.
    center_directions : dict of str to numpy.ndarray or None
        ``[D, d]`` top principal directions per modality, projected out of ``two-view-z``'s
        second view.

    Notes
    -----
    Two records are equal when their :meth:`to_dict` forms are.
    """

    standardizer: ModalityStandardizer
    corpus_sizes: dict[str, int]
    center_means: dict[str, np.ndarray] | None = None
    provenance: Provenance = field(default_factory=Provenance)
    background: BackgroundScale | None = None
    centered: CenteredBackgroundScale | None = None
    center_directions: dict[str, np.ndarray] | None = None

    @property
    def model_id(self) -> str | None:
        """The model the statistics were fitted for."""
        return self.provenance.model_id

    @property
    def dim(self) -> int | None:
        """The embedding dimension the statistics were fitted for."""
        return self.provenance.dim

    def with_standardizer(self, standardizer: ModalityStandardizer) -> CalibrationRecord:
        """A copy holding ``standardizer`` (e.g. after online updates)."""
        return replace(self, standardizer=standardizer)

    def check_compatible(self, model_id: str | None, dim: int | None) -> None:
        """Raise ``ValueError`` when this record was fitted for another model or dimension.

        Parameters
        ----------
        model_id, dim : str or int or None
            The engine's model and dimension; ``None`` means unknown (not checked).
        """
        self.standardizer.check_compatible(model_id, dim)
        if dim is not None and self.center_means:
            width = len(next(iter(self.center_means.values())))
            if width != int(dim):
                raise ValueError(
                    f"calibration center means have dimension {width}, not {dim}; recalibrate"
                )

    def check_method(self, method: type, name: str, query_modality: str) -> None:
        """Raise :class:`NotCalibratedError` when a fusion method needs what this record lacks.

        Parameters
        ----------
        method : type
            A :class:`~mmgap_core.fusion.FusionMethod` subclass; its ``needs_*`` flags are read.
        name : str
            The method's name, for the message.
        query_modality : str
        """
        if method.needs_center_means and not self.center_means:
            raise NotCalibratedError(
                f"{name} needs the modality means of a calibration, and this one has none: run "
                "`mmgap calibrate` (or engine.calibrate()) again"
            )
        if method.needs_background_scale and (
            self.background is None or not self.background.has_query_modality(query_modality)
        ):
            raise NotCalibratedError(
                f"{name} needs background scales for {query_modality} queries, and this "
                f"calibration has none: run `mmgap calibrate` (or engine.calibrate()) again"
            )
        if method.needs_centered_scale and (
            self.centered is None or not self.centered.has_query_modality(query_modality)
        ):
            raise NotCalibratedError(
                f"{name} needs centred background scales for {query_modality} queries, and this "
                f"calibration has none: run `mmgap calibrate` (or engine.calibrate()) again"
            )
        fitted = self.standardizer.query_modalities()
        if method.needs_standardizer and query_modality not in fitted:
            raise NotCalibratedError(
                f"no statistics for {query_modality} queries (calibrated for {fitted}); run "
                f"`mmgap calibrate --query-modalities {query_modality}`"
            )

    def add_search(
        self,
        lists: Mapping[str, np.ndarray],
        query_modality: str,
        counts,
        *,
        query: np.ndarray | None = None,
        embeddings: Mapping[str, np.ndarray] | None = None,
    ) -> bool:
        """Add one search's lists (self-excluded, ``[1, k]`` per modality) to the statistics.

        Its top-1 per modality goes to the standardizer, its lists to the background scales.
        With the ``[d]`` query and its candidates' ``[k, d]`` embeddings (a ``two-view-z``
        search), their post-processed cosines go to the second view's scales as one pool per
        modality. Returns whether there was any score to add.
        """
        best = {m: float(v[0, 0]) for m, v in lists.items() if np.isfinite(v[0, 0])}
        if not best:
            return False
        sizes = {m: max(int(counts.get(m, 0)), v.shape[1], 1) for m, v in lists.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.standardizer.partial_fit(
                np.asarray(list(best.values())), list(best), query_modality
            )
            if self.background is not None:
                self.background.partial_fit(lists, query_modality, sizes)
            self._add_centred_pools(query, query_modality, embeddings, sizes)
        return True

    def _add_centred_pools(self, query, query_modality: str, embeddings, sizes) -> None:
        centred = self.centered
        if query is None or not embeddings or centred is None or not self.center_means:
            return
        if not centred.has_query_modality(query_modality):
            return  # a record that predates the second view for these queries: calibrate fits it
        post = post_processings(self.center_means, self.center_directions)
        rows = row_centered_cosines(query, query_modality, embeddings, post)
        if rows is None:  # padded or malformed: nothing the calibration would have fitted
            return
        pools = {m: np.array([r]) for m, r in rows.items() if m in sizes}
        centred.partial_fit(pools, query_modality, {m: sizes[m] for m in pools})

    def usable_method(self, name: str, query_modality: str) -> str:
        """``name``, or ``background-z`` when ``name`` is the default method and this record,
        written before it, lacks what it needs for ``query_modality`` queries (a search says so).
        """
        from ..fusion import DEFAULT_METHOD, method_class

        if name != DEFAULT_METHOD or not method_class(name).needs_centered_scale:
            return name
        if self.centered is not None and self.centered.has_query_modality(query_modality):
            return name
        return "background-z"

    def missing_candidates(
        self, query_modality: str, modalities: Iterable[str], method: type | None = None
    ) -> list[str]:
        """Those of ``modalities`` with no statistics for ``query_modality`` queries.

        With ``method`` (a fusion method class), only the statistics it needs are looked at.
        """
        wanted = set(modalities)
        missing = set()
        if method is None or method.needs_standardizer:
            missing |= wanted - set(self.standardizer.candidate_modalities(query_modality))
        if method is not None and method.needs_background_scale:
            bg = self.background
            missing |= {m for m in wanted if bg is None or not bg.has(m, query_modality)}
        if method is not None and method.needs_centered_scale:
            cs = self.centered
            missing |= {m for m in wanted if cs is None or not cs.has(m, query_modality)}
        return sorted(missing)

    def grown(self, counts: Mapping[str, int], factor: float) -> list[str]:
        """Modalities now holding over ``(1 + factor)`` times their items at fit time.

        Returns
        -------
        list of str
            ``"modality: before -> now"`` for each.
        """
        fitted = self.corpus_sizes
        return [
            f"{m}: {fitted.get(m, 0)} -> {n}"
            for m, n in counts.items()
            if n > (1 + factor) * max(fitted.get(m, 0), 1)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe ``mmgap.calibration`` envelope (version 1)."""
        p = self.provenance
        means = self.center_means
        return {
            "format": CALIBRATION_FORMAT,
            "version": CALIBRATION_VERSION,
            "model_id": p.model_id,
            "dim": p.dim,
            "standardizer": self.standardizer.to_dict(),
            "corpus_sizes": dict(self.corpus_sizes),
            "center_means": {m: np.asarray(v).tolist() for m, v in means.items()}
            if means
            else None,
            "calibration_queries": dict(p.calibration_queries),
            "source": p.source,
            "mining": p.mining,
            "mining_agreement": p.mining_agreement,
            "fitted_at": p.fitted_at,
            "background_scale": None if self.background is None else self.background.to_dict(),
            "centered_background_scale": None if self.centered is None else self.centered.to_dict(),
            "center_directions": None
            if self.center_directions is None
            else {m: np.asarray(v).tolist() for m, v in self.center_directions.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> CalibrationRecord:
        """Check ``data`` against the whole schema, then build the record.

        Parameters
        ----------
        data : Any
            A decoded ``mmgap.calibration`` JSON object.

        Returns
        -------
        CalibrationRecord

        Raises
        ------
        CalibrationFormatError
            One line naming the first problem found (a missing or mistyped field, a non-finite
            number, a standardizer that disagrees with the record's model or dimension, ...).
        """
        if not isinstance(data, dict):
            schema.fail(f"expected a JSON object, got {schema.describe(data)}")
        if data.get("format") != CALIBRATION_FORMAT:
            schema.fail(f"not mmgap calibration data (expected format {CALIBRATION_FORMAT!r})")
        if data.get("version") != CALIBRATION_VERSION:
            schema.fail(
                f"version is {schema.describe(data.get('version'))}; this mmgap reads version "
                f"{CALIBRATION_VERSION}"
            )
        model_id = schema.opt_str(data, "model_id")
        dim = schema.opt_positive_int(data, "dim", "dim")
        provenance = Provenance(
            model_id=model_id,
            dim=dim,
            source=schema.opt_str(data, "source"),
            mining=schema.opt_str(data, "mining"),
            fitted_at=schema.opt_str(data, "fitted_at"),
            calibration_queries=schema.counts(
                data.get("calibration_queries"), "calibration_queries", optional=True
            ),
            mining_agreement=schema.mining_agreement(data.get("mining_agreement")),
        )
        if "corpus_sizes" not in data:
            schema.fail("'corpus_sizes' is missing")
        corpus_sizes = schema.counts(data["corpus_sizes"], "corpus_sizes", optional=False)
        means = schema.center_means(data.get("center_means"), dim)
        if "standardizer" not in data:
            schema.fail("'standardizer' is missing")
        std = schema.standardizer(data["standardizer"], model_id, dim)
        background = schema.background_scale(data.get("background_scale"), model_id, dim)
        centered = schema.centered_scale(data.get("centered_background_scale"), model_id, dim)
        directions = schema.center_directions(data.get("center_directions"), dim)
        return cls(std, corpus_sizes, means, provenance, background, centered, directions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CalibrationRecord):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable, compared by value


# ---------------------------------------------------------------------------------------- files
def write_calibration_file(record: CalibrationRecord, path) -> Path:
    """Write ``record`` as strict JSON to ``path``, atomically.

    Parameters
    ----------
    record : CalibrationRecord
    path : str or os.PathLike

    Returns
    -------
    pathlib.Path
    """
    from ..jsonio import write_json

    return write_json(path, record.to_dict())


def read_calibration_file(path) -> CalibrationRecord:
    """Read and check a calibration JSON file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    CalibrationRecord

    Raises
    ------
    CalibrationFormatError
        When the file cannot be read (missing, not a regular file, too large, not UTF-8 JSON,
        nested too deeply) or does not follow the schema; one line that names the file.
    """
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise CalibrationFormatError(f"cannot read calibration file {path}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise CalibrationFormatError(
                f"cannot read calibration file {path}: {st.st_size} bytes; a calibration file "
                f"holds at most {MAX_FILE_BYTES} bytes"
            )
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
    except CalibrationFormatError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CalibrationFormatError(f"cannot read calibration file {path}: {reason}") from exc
    except UnicodeDecodeError as exc:
        raise CalibrationFormatError(f"cannot read calibration file {path}: not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise CalibrationFormatError(
            f"cannot read calibration file {path}: not JSON ({exc.msg} at line {exc.lineno})"
        ) from exc
    except RecursionError as exc:
        raise CalibrationFormatError(
            f"cannot read calibration file {path}: JSON nested too deeply"
        ) from exc
    try:
        return CalibrationRecord.from_dict(data)
    except CalibrationFormatError as exc:
        raise CalibrationFormatError(f"calibration file {path}: {exc}") from None
