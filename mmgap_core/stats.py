"""Per-(query modality, candidate modality) score statistics, as a scikit-learn-style estimator.

The paper's standardization (Yamashita et al., 2025) scores a candidate of modality ``m`` by
``z = (s - mu_m) / sigma_m``, where ``mu_m`` and ``sigma_m`` are the mean and standard deviation of
the pseudo-positive scores (each calibration query's best cosine in modality ``m``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ._validation import as_labels

FORMAT_NAME = "mmgap.standardizer"
FORMAT_VERSION = 1

Key = tuple[str, str]  # (query modality, candidate modality)


def _broadcast_label(labels, n: int):
    """One str label for all ``n`` rows, else the labels as given (checked by as_labels)."""
    if isinstance(labels, str):
        if not labels.strip():
            raise ValueError(f"modality label must be a non-empty string, got {labels!r}")
        return np.full(n, labels, dtype=object)
    return labels


class NotFittedError(ValueError):
    """Raised when statistics are used before they were fitted."""


@dataclass(frozen=True)
class KeyStats:
    """Running moments of one (query modality, candidate modality) key.

    Attributes
    ----------
    count : int
        Number of scores.
    mean : float
        Their mean.
    m2 : float
        Sum of squared deviations from the mean.
    """

    count: int
    mean: float
    m2: float  # sum of squared deviations from the mean

    @property
    def variance(self) -> float:
        """Population variance (NaN when empty)."""
        return self.m2 / self.count if self.count else float("nan")

    @property
    def std(self) -> float:
        """Population standard deviation (NaN when empty)."""
        return math.sqrt(max(self.variance, 0.0)) if self.count else float("nan")

    @staticmethod
    def of(values: np.ndarray) -> KeyStats:
        """The moments of ``values`` (1-D, at least one)."""
        v = np.asarray(values, dtype=np.float64)
        mean = float(v.mean())
        return KeyStats(int(v.size), mean, float(((v - mean) ** 2).sum()))

    def merge(self, other: KeyStats) -> KeyStats:
        """The moments of both sets of scores together.

        Chan et al.'s parallel update: exact for any split of the data, and stable.
        """
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return KeyStats(n, mean, m2)


class ModalityStandardizer:
    """Fit per-modality means/stds of pseudo-positive scores; transform raw cosines into z-scores.

    Parameters
    ----------
    model_id : str, optional
        The embedding model the statistics are fitted for; saved by :meth:`to_dict` and checked
        by :meth:`check_compatible`, so statistics are never reused with another model.
    dim : int, optional
        The embedding dimension, saved and checked the same way.
    min_std : float, default 1e-6
        A key whose standard deviation is below this (zero variance, or a single pseudo-pair) is
        *degenerate*. Its std falls back to the count-weighted pooled std of the non-degenerate
        keys of the same query modality, or to 1.0 (a pure mean shift) when there is none. A
        ``UserWarning`` says so.

    Attributes
    ----------
    mean_ : dict
        ``(query modality, candidate modality) -> mean`` of the pseudo-positive scores.
    std_ : dict
        The std :meth:`transform` uses, after any fallback.
    count_ : dict
        Number of scores per key.
    raw_std_ : dict
        The std before fallback.
    fallback_ : set
        The keys whose std fell back.

    Raises
    ------
    ValueError
        For a non-positive ``min_std``, a bad ``dim`` or a non-string ``model_id``.
    """

    def __init__(
        self, *, model_id: str | None = None, dim: int | None = None, min_std: float = 1e-6
    ):
        if min_std <= 0 or not math.isfinite(min_std):
            raise ValueError(f"min_std must be a positive finite number, got {min_std!r}")
        if dim is not None:
            # A plain int keeps to_dict() JSON-safe (numpy ints are not).
            if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
                raise ValueError(f"dim must be a positive integer or None, got {dim!r}")
            dim = int(dim)
        if model_id is not None and not isinstance(model_id, str):
            raise ValueError(f"model_id must be a string or None, got {model_id!r}")
        self.model_id = model_id
        self.dim = dim
        self.min_std = float(min_std)
        self._stats: dict[Key, KeyStats] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, scores, candidate_modalities, query_modalities="text") -> ModalityStandardizer:
        """Fit from pseudo-positive scores, replacing any earlier fit (kept if the input is bad).

        Parameters
        ----------
        scores : array-like
            1-D pseudo-positive cosines.
        candidate_modalities : str or sequence of str
            One label for all scores, or one per score.
        query_modalities : str or sequence of str, default "text"
            One label for all scores, or one per score.

        Returns
        -------
        ModalityStandardizer
            ``self``.

        Raises
        ------
        ValueError
            For non-finite scores or bad labels.
        """
        return self._fit_chunk({}, scores, candidate_modalities, query_modalities)

    def partial_fit(
        self, scores, candidate_modalities, query_modalities="text"
    ) -> ModalityStandardizer:
        """Merge a chunk of pseudo-positive scores into the running statistics.

        Parameters
        ----------
        scores : array-like
            1-D pseudo-positive cosines.
        candidate_modalities, query_modalities : str or sequence of str
            Each one label for all scores, or one label per score.

        Returns
        -------
        ModalityStandardizer
            ``self``.
        """
        return self._fit_chunk(self._stats, scores, candidate_modalities, query_modalities)

    def _fit_chunk(self, start, scores, candidate_modalities, query_modalities):
        # Validate everything before touching the fitted state.
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 1:
            raise ValueError(f"scores: expected a 1-D array, got shape {s.shape}")
        if not np.isfinite(s).all():
            raise ValueError("scores: contains NaN or inf")
        cand = as_labels(
            _broadcast_label(candidate_modalities, s.shape[0]), "candidate_modalities", s.shape[0]
        )
        qm = as_labels(
            _broadcast_label(query_modalities, s.shape[0]), "query_modalities", s.shape[0]
        )
        stats = dict(start)
        if s.shape[0] == 0:
            self._stats = stats
            self._refresh()
            return self
        # Group by (query, candidate) label codes; joining the strings with a separator is not safe
        # (numpy strips trailing NULs from str arrays, and a label may contain any separator).
        q_uniq, q_code = np.unique(qm, return_inverse=True)
        c_uniq, c_code = np.unique(cand, return_inverse=True)
        pair_code = q_code.reshape(-1).astype(np.int64) * len(c_uniq) + c_code.reshape(-1)
        for code in np.unique(pair_code):
            key = (str(q_uniq[code // len(c_uniq)]), str(c_uniq[code % len(c_uniq)]))
            chunk = KeyStats.of(s[pair_code == code])
            stats[key] = stats.get(key, KeyStats(0, 0.0, 0.0)).merge(chunk)
        self._stats = stats
        self._refresh()
        return self

    def _refresh(self) -> None:
        """Recompute the fitted attributes; warn about degenerate keys (at the user's call)."""
        self.count_ = {k: v.count for k, v in self._stats.items()}
        self.mean_ = {k: v.mean for k, v in self._stats.items()}
        self.raw_std_ = {k: v.std for k, v in self._stats.items()}
        self.std_, self.fallback_ = {}, set()
        for (q, c), st in self._stats.items():
            if st.count >= 2 and st.std >= self.min_std:
                self.std_[(q, c)] = st.std
                continue
            # Pool the variances of this query modality's healthy keys: same scale, no made-up
            # number.
            healthy = [
                v
                for (q2, _), v in self._stats.items()
                if q2 == q and v.count >= 2 and v.std >= self.min_std
            ]
            if healthy:
                pooled = math.sqrt(sum(v.m2 for v in healthy) / sum(v.count for v in healthy))
            else:
                pooled = 1.0
            self.std_[(q, c)] = pooled
            self.fallback_.add((q, c))
        if self.fallback_:
            warnings.warn(
                "degenerate statistics (fewer than 2 pseudo-pairs or zero variance) for "
                f"{sorted(self.fallback_)}; their std falls back to the pooled std of the other "
                "modalities (or 1.0). Calibrate with more queries for a proper fit.",
                UserWarning,
                stacklevel=4,  # _refresh <- _fit_chunk <- fit/partial_fit <- caller
            )

    # ------------------------------------------------------------------ using
    @property
    def is_fitted(self) -> bool:
        """Whether any key was fitted."""
        return bool(self._stats)

    def _check_fitted(self) -> None:
        if not self._stats:
            raise NotFittedError(
                "ModalityStandardizer is not fitted: call fit/partial_fit with pseudo-positive "
                "scores (e.g. from mmgap_core.mine_pseudo_positives) first"
            )

    @property
    def keys_(self) -> list[Key]:
        """The fitted ``(query modality, candidate modality)`` keys, sorted."""
        self._check_fitted()
        return sorted(self._stats)

    def query_modalities(self) -> list[str]:
        """The fitted query modalities, sorted."""
        return sorted({q for q, _ in self._stats})

    def candidate_modalities(self, query_modality: str | None = None) -> list[str]:
        """The fitted candidate modalities (of ``query_modality`` queries, or of any), sorted."""
        return sorted({c for q, c in self._stats if query_modality is None or q == query_modality})

    def params(self, query_modality: str, candidate_modality: str) -> tuple[float, float]:
        """The ``(mean, std)`` :meth:`transform` uses for one key.

        Returns
        -------
        (float, float)

        Raises
        ------
        NotFittedError
            Before any fit.
        ValueError
            Naming the missing key.
        """
        self._check_fitted()
        key = (query_modality, candidate_modality)
        if key not in self._stats:
            if query_modality not in self.query_modalities():
                raise ValueError(
                    f"no statistics for query modality {query_modality!r}; fitted query "
                    f"modalities: {self.query_modalities()}"
                )
            raise ValueError(
                f"no statistics for candidate modality {candidate_modality!r} under query modality "
                f"{query_modality!r}; fitted candidate modalities: "
                f"{self.candidate_modalities(query_modality)}"
            )
        return self.mean_[key], self.std_[key]

    def transform(self, scores, candidate_modalities, query_modality: str = "text") -> np.ndarray:
        """z-scores ``(s - mean) / std`` of each score, by its candidate modality.

        Parameters
        ----------
        scores : array-like
            Raw cosines, any shape.
        candidate_modalities : str or array-like of str
            One label for all scores, or a label array of the same shape.
        query_modality : str, default "text"

        Returns
        -------
        numpy.ndarray
            float64, the shape of ``scores``.

        Raises
        ------
        NotFittedError
            Before any fit.
        ValueError
            For a label shape that does not match, or a key that was not fitted.
        """
        self._check_fitted()
        s = np.asarray(scores, dtype=np.float64)
        if isinstance(candidate_modalities, str):
            mean, std = self.params(query_modality, candidate_modalities)
            out = (s - mean) / std
        else:
            labels = np.asarray(candidate_modalities, dtype=object)
            if labels.shape != s.shape:
                raise ValueError(
                    f"candidate_modalities: shape {labels.shape} does not match scores {s.shape}"
                )
            out = np.empty_like(s)
            for m in np.unique(labels.astype(str)):
                mean, std = self.params(query_modality, str(m))
                sel = labels == m
                out[sel] = (s[sel] - mean) / std
        return out

    def fit_transform(self, scores, candidate_modalities, query_modalities="text") -> np.ndarray:
        """:meth:`fit` then :meth:`transform`, for one query modality (checked before fitting).

        Returns
        -------
        numpy.ndarray
            The z-scores of ``scores``.

        Raises
        ------
        ValueError
            When ``query_modalities`` is not one label.
        """
        if not isinstance(query_modalities, str):
            raise ValueError("fit_transform needs a single query modality")
        self.fit(scores, candidate_modalities, query_modalities)
        return self.transform(scores, candidate_modalities, query_modalities)

    # ------------------------------------------------------------------ compatibility & persistence
    def check_compatible(self, model_id: str | None = None, dim: int | None = None) -> None:
        """Refuse statistics fitted for another model or dimension.

        Raises
        ------
        ValueError
            When ``model_id`` or ``dim`` (each checked when both sides know it) differs.
        """
        if model_id is not None and self.model_id is not None and model_id != self.model_id:
            raise ValueError(
                f"statistics were fitted for model {self.model_id!r}, not {model_id!r}; "
                "recalibrate for this model (e.g. `mmgap calibrate`)"
            )
        if dim is not None and self.dim is not None and int(dim) != int(self.dim):
            raise ValueError(
                f"statistics were fitted for embedding dimension {self.dim}, not {dim}; recalibrate"
            )

    def gap(self, query_modality: str = "text") -> dict[str, float]:
        """Mean pseudo-positive score per candidate modality: the modality gap at a glance.

        Returns
        -------
        dict of str to float
        """
        self._check_fitted()
        return {c: self.mean_[(q, c)] for (q, c) in self._stats if q == query_modality}

    def to_dict(self) -> dict:
        """JSON-safe, versioned data (plain floats, ints and strings).

        Returns
        -------
        dict
            Format, version, model, ``min_std`` and one row of moments per key.
        """
        self._check_fitted()
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "model_id": self.model_id,
            "dim": self.dim,
            "min_std": self.min_std,
            "stats": [
                {
                    "query_modality": q,
                    "candidate_modality": c,
                    "count": st.count,
                    "mean": st.mean,
                    "m2": st.m2,
                    "std": self.std_[(q, c)],
                    "fallback": (q, c) in self.fallback_,
                }
                for (q, c), st in sorted(self._stats.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModalityStandardizer:
        """Rebuild from :meth:`to_dict` output.

        Returns
        -------
        ModalityStandardizer

        Raises
        ------
        ValueError
            For another format or version, or any malformed field.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"not mmgap standardizer data (expected format {FORMAT_NAME!r})")
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"standardizer data has version {version!r}; this mmgap reads version "
                f"{FORMAT_VERSION}"
            )
        try:
            obj = cls(
                model_id=data.get("model_id"),
                dim=data.get("dim"),
                min_std=data.get("min_std", 1e-6),
            )
            stats = {}
            for row in data["stats"]:
                st = KeyStats(int(row["count"]), float(row["mean"]), float(row["m2"]))
                if (
                    st.count < 1
                    or not math.isfinite(st.mean)
                    or not math.isfinite(st.m2)
                    or st.m2 < 0
                ):
                    raise ValueError(f"invalid statistics row {row!r}")
                stats[(str(row["query_modality"]), str(row["candidate_modality"]))] = st
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed standardizer data: missing or bad field {exc}") from exc
        if not stats:
            raise ValueError("standardizer data holds no statistics")
        obj._stats = stats
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # already warned when it was fitted
            obj._refresh()
        return obj

    def __repr__(self) -> str:
        if not self._stats:
            return "ModalityStandardizer(unfitted)"
        parts = ", ".join(
            f"{q}->{c}: mean={self.mean_[(q, c)]:.4f} std={self.std_[(q, c)]:.4f} "
            f"n={self.count_[(q, c)]}"
            for q, c in sorted(self._stats)
        )
        return f"ModalityStandardizer({parts})"
