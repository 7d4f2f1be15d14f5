"""The read API every Chroma layout shares: counts, queries, embedding scans and samples.

A layout subclasses :class:`StoreReader` and says where each modality lives (``_sources``), which
modalities exist and the embedding dimension; everything else is implemented here once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from mmgap_core._validation import as_embeddings, positive_int
from mmgap_core.store.base import ModalityHits
from mmgap_core.store.chroma_client import unavailable_guard
from mmgap_core.store.chroma_query import (
    Source,
    fetch_rows,
    hits_from_rows,
    query_sources,
    run_per_modality,
)

__all__ = ["StoreReader"]

logger = logging.getLogger(__name__)

_ID_CHUNK = 1000
#: Ids per ids-only page of :meth:`StoreReader.iter_embeddings` (a few MB of strings).
_ID_PAGE = 50_000


class StoreReader:
    """Read API shared by :class:`~mmgap_core.store.chroma_store.ChromaStore` and the foreign
    layouts (:class:`~mmgap_core.store.chroma_foreign.ForeignLayout`).

    Every public method turns an unreachable Chroma server into
    :class:`~mmgap_core.store.errors.StoreUnavailableError`.
    """

    _client: Any

    # -- to implement -------------------------------------------------------------------------
    def _sources(self, modality: str) -> list[Source]:
        raise NotImplementedError

    def modalities(self) -> list[str]:
        """Modality labels present in the store."""
        raise NotImplementedError

    @property
    def dim(self) -> int | None:
        """Embedding dimension, or ``None`` when nothing is stored yet."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def _check_known(self, mods: Sequence[str]) -> None:
        known = self.modalities()
        unknown = [m for m in mods if m not in known]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; this store has {known}")

    def _require(self, modality: str) -> list[Source]:
        known = self.modalities()
        if modality not in known:
            raise ValueError(f"unknown modality {modality!r}; this store has {known}")
        return self._sources(modality)

    def _query_matrix(self, embeddings: Any) -> np.ndarray:
        # One vector is one query row.
        return as_embeddings(
            embeddings, "query embeddings", dim=self.dim, allow_1d=True, allow_empty=True
        )

    @unavailable_guard
    def count(self, modality: str) -> int:
        """Number of items of ``modality``.

        Raises
        ------
        ValueError
            For a modality the store does not have.
        """
        total = 0
        for src in self._require(modality):
            if src.is_whole_collection:
                total += src.collection.count()
            elif src.ids is not None and src.where is None and src.where_document is None:
                total += len(src.ids)
            else:
                total += len(src.collection.get(include=[], **src.filters(None))["ids"])
        return total

    @unavailable_guard
    def counts(self) -> dict[str, int]:
        """Item count for every modality."""
        return {m: self.count(m) for m in self.modalities()}

    @unavailable_guard
    def query(
        self,
        modality: str,
        embeddings: Any,
        k: int,
        *,
        where: Mapping[str, Any] | None = None,
        include_embeddings: bool = False,
    ) -> ModalityHits:
        """Top-``k`` cosine hits in ``modality`` for each row of ``embeddings``.

        One Chroma query call serves all rows.

        Parameters
        ----------
        modality : str
            A modality of this store.
        embeddings : array_like, shape (Q, d) or (d,)
            Query vectors; one vector is one query row.
        k : int
            Hits per query row, a positive integer (``bool`` is refused).
        where : dict, optional
            A Chroma metadata filter.
        include_embeddings : bool
            Also return the hits' embeddings ``[Q, k, d]``.

        Returns
        -------
        ModalityHits
            An empty modality gives rows with no hits (scores all ``-inf``).

        Raises
        ------
        ValueError
            For an unknown modality (the message lists the known ones), a bad ``k``, or query
            vectors of the wrong width or with NaN/inf.
        """
        k = positive_int(k, "k")
        sources = self._require(modality)
        q = self._query_matrix(embeddings)
        return query_sources(
            modality, sources, q, k, where=where, include_embeddings=include_embeddings
        )

    @unavailable_guard
    def query_per_modality(
        self,
        embeddings: Any,
        k_per_modality: int | Mapping[str, int],
        *,
        where: Mapping[str, Any] | None = None,
        modalities: Sequence[str] | None = None,
        include_embeddings: bool = False,
    ) -> dict[str, ModalityHits]:
        """:meth:`query` every modality (or ``modalities``) concurrently, one thread each.

        Parameters
        ----------
        embeddings : array_like, shape (Q, d) or (d,)
            Query vectors, validated once for all modalities.
        k_per_modality : int or dict
            One ``k`` for all, or ``{modality: k}``; with a dict and no ``modalities`` the dict's
            keys are the modalities queried.
        where : dict, optional
            A Chroma metadata filter applied in every modality.
        modalities : sequence of str, optional
            The modalities to query (default: all, or the keys of ``k_per_modality``).
        include_embeddings : bool
            Also return the hits' embeddings.

        Returns
        -------
        dict of str to ModalityHits
            In the order of the modalities queried.
        """
        per = isinstance(k_per_modality, Mapping)
        if modalities is not None:
            mods = list(modalities)
        else:
            mods = list(k_per_modality) if per else self.modalities()
        self._check_known(mods)
        if per:
            missing = [m for m in mods if m not in k_per_modality]
            if missing:
                raise ValueError(f"k_per_modality has no k for modalities {missing}")
            ks = {m: positive_int(k_per_modality[m], f"k_per_modality[{m!r}]") for m in mods}
        else:
            ks = dict.fromkeys(mods, positive_int(k_per_modality, "k_per_modality"))
        q = self._query_matrix(embeddings)

        def one(m: str) -> list | None:
            return fetch_rows(
                self._sources(m), q, ks[m], where=where, include_embeddings=include_embeddings
            )

        # The hits are built here, not in each modality's thread: the thread whose query ends
        # last then goes straight back to the caller.
        rows = run_per_modality(one, mods)
        return {m: hits_from_rows(m, rows[m], q.shape, ks[m], include_embeddings) for m in mods}

    @unavailable_guard
    def iter_embeddings(
        self, modality: str, batch_size: int = 4096
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, embeddings [b, d] float32)`` batches over every item of ``modality``.

        Ids are paged (``limit``/``offset``, :data:`_ID_PAGE` at a time) and the embeddings
        fetched by id, ``batch_size`` at a time: Chroma's ``offset`` costs grow with the offset,
        and far less for an ids-only page (a 250k-item pass took 10 s instead of 16 s).
        """
        batch_size = positive_int(batch_size, "batch_size")
        page = max(batch_size, _ID_PAGE)
        for src in self._require(modality):
            offset = 0
            while True:
                page_ids = src.collection.get(
                    include=[], limit=page, offset=offset, **src.filters(None)
                )["ids"]
                for start in range(0, len(page_ids), batch_size):
                    res = src.collection.get(
                        ids=list(page_ids[start : start + batch_size]), include=["embeddings"]
                    )
                    ids = list(res["ids"])  # an item deleted since the id page is left out
                    if ids:
                        embs = np.asarray(res["embeddings"], dtype=np.float32)
                        yield ids, embs.reshape(len(ids), -1)
                if len(page_ids) < page:
                    break
                offset += len(page_ids)

    @unavailable_guard
    def sample_documents(
        self, modality: str, n: int, seed: int = 0
    ) -> tuple[list[str], list[str | None], np.ndarray]:
        """A reproducible random sample of ``n`` items (all if fewer).

        Parameters
        ----------
        modality : str
            A modality of this store.
        n : int
            Sample size (>= 0).
        seed : int
            Seed of the sample.

        Returns
        -------
        ids : list of str
        documents : list of str or None
            The stored document (for an image modality usually ``None``, or the base64 image in
            LangChain's layout: use the embeddings).
        embeddings : ndarray, shape (len(ids), d)
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        owners: dict[str, Source] = {}
        for src in self._require(modality):
            for item_id in src.collection.get(include=[], **src.filters(None))["ids"]:
                owners.setdefault(item_id, src)
        pool = sorted(owners)
        rng = np.random.default_rng(seed)
        take = min(n, len(pool))
        chosen = [pool[i] for i in rng.choice(len(pool), size=take, replace=False)] if take else []
        docs: dict[str, str | None] = {}
        embs: dict[str, np.ndarray] = {}
        for start in range(0, len(chosen), _ID_CHUNK):
            chunk = chosen[start : start + _ID_CHUNK]
            by_src: dict[int, list[str]] = {}
            for item_id in chunk:
                by_src.setdefault(id(owners[item_id]), []).append(item_id)
            for src_ids in by_src.values():
                src = owners[src_ids[0]]
                res = src.collection.get(
                    ids=src_ids, include=["documents", "embeddings", "uris", "metadatas"]
                )
                for j, item_id in enumerate(res["ids"]):
                    doc = res["documents"][j]
                    if src.describe is not None:
                        doc, _ = src.describe(
                            item_id, doc, res["uris"][j], dict(res["metadatas"][j] or {})
                        )
                    docs[item_id] = doc
                    embs[item_id] = np.asarray(res["embeddings"][j], dtype=np.float32)
        d = self.dim or 0
        matrix = (
            np.stack([embs[i] for i in chosen]).astype(np.float32)
            if chosen
            else np.zeros((0, d), dtype=np.float32)
        )
        return chosen, [docs[i] for i in chosen], matrix
