"""The on-disk embedding cache of ``mmgap reproduce``.

One folder per model id under the cache folder, one sub-folder per modality; each ``.npz`` file
holds the vectors (and the failure reasons) of the items one call newly embedded, so nothing is
stored twice. Items are looked up by key (see :mod:`.items`), so they are reused across pools and
``--limit`` runs. Files are written atomically (:func:`mmgap_core.jsonio.atomic_write`); chunks are
saved as they finish, so an interrupted run resumes where it stopped. Failures are cached too (a
corrupt image is not retried until its file changes); delete a model's folder to start over.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..jsonio import atomic_write
from .items import InputMaker

__all__ = ["CACHE_DIRNAME", "Embedded", "EmbeddingCache", "default_cache_dir"]

logger = logging.getLogger(__name__)

CACHE_DIRNAME = ".mmgap-cache"
TEXT_CHUNK = 2048  # items embedded (and saved to the cache) at a time
IMAGE_CHUNK = 512
_CACHE_FORMAT = "mmgap-embeddings-v1"
_UNREADABLE = (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile)


def default_cache_dir(root: str | os.PathLike) -> Path:
    """Choose the embedding cache folder for a dataset folder.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset folder.

    Returns
    -------
    pathlib.Path
        ``ROOT/.mmgap-cache`` when it can be written there, else ``$XDG_CACHE_HOME/mmgap``
        (``~/.cache/mmgap``).
    """
    root = Path(root)
    candidate = root / CACHE_DIRNAME
    if candidate.is_dir() and os.access(candidate, os.W_OK):
        return candidate
    if not candidate.exists() and root.is_dir() and os.access(root, os.W_OK):
        return candidate
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmgap"


def _slug(text: str, width: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:width].strip("_") or "model"


@dataclass
class Embedded:
    """Vectors for a set of item keys, from the cache or the encoder.

    Attributes
    ----------
    row_of : dict of str to int
        Key -> row of ``vectors``, for the keys that embedded.
    vectors : numpy.ndarray, shape (n, dim)
        float32 vectors.
    failures : dict of str to str
        Key -> reason, for the keys that could not be embedded.
    n_new, n_cached : int
        Keys embedded by this call, and keys found in the cache.
    """

    row_of: dict[str, int]
    vectors: np.ndarray
    failures: dict[str, str]
    n_new: int = 0
    n_cached: int = 0


def _stack(vectors: Mapping[str, np.ndarray], keys: Sequence[str], dim: int) -> np.ndarray:
    if not keys:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([vectors[k] for k in keys]).astype(np.float32)


class EmbeddingCache:
    """On-disk embeddings of one or more models, reusable item by item.

    Parameters
    ----------
    directory : str or os.PathLike or None
        The cache folder; ``None`` disables caching (everything is embedded, nothing written).
    log : callable, optional
        Called with one-line status messages (an unreadable cache file, ...); default: this
        module's logger at INFO.
    """

    def __init__(
        self, directory: str | os.PathLike | None, *, log: Callable[[str], None] | None = None
    ):
        self.directory = Path(directory) if directory is not None else None
        self._log = log or logger.info

    def folder(self, model_id: str, kind: str) -> Path | None:
        """Return the folder of one model's ``kind`` ("text"/"image") vectors; None: no cache."""
        if self.directory is None:
            return None
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:12]
        return self.directory / f"{_slug(model_id)}-{digest}" / kind

    @staticmethod
    def set_digest(keys: Sequence[str]) -> str:
        """Return a 32-hex-digit digest of a list of keys (the name of the file holding them)."""
        return hashlib.sha256("\n".join(keys).encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def _read(self, path: Path, model_id: str, wanted: set[str]):
        """(key -> vector, key -> failure, dim) of ``wanted`` in one file; None if unusable."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != _CACHE_FORMAT or str(z["model_id"]) != model_id:
                    return None
                keys = z["keys"].tolist()
                pos = [i for i, k in enumerate(keys) if k in wanted]
                found, dim = {}, None
                if pos:  # read the vectors only from files that hold wanted items
                    matrix = z["vectors"]
                    dim = int(matrix.shape[1])
                    found = {keys[i]: matrix[i] for i in pos}
                failed = dict(zip(z["failed_keys"].tolist(), z["failed_reasons"].tolist()))
        except _UNREADABLE as exc:
            self._log(f"ignoring unreadable cache file {path}: {type(exc).__name__}: {exc}")
            return None
        return found, {k: v for k, v in failed.items() if k in wanted}, dim

    def load(self, model_id: str, kind: str, keys: Sequence[str]):
        """Look ``keys`` up in the cache.

        Parameters
        ----------
        model_id : str
            The encoder's model id.
        kind : {"text", "image"}
            The modality the vectors were embedded as.
        keys : sequence of str
            Item keys.

        Returns
        -------
        tuple of dict
            ``(key -> vector, key -> failure reason)`` for the keys the cache holds. The file
            named after exactly these keys is read first, then the newest; vectors of another
            dimension than the first file's are ignored.
        """
        folder = self.folder(model_id, kind)
        vectors: dict[str, np.ndarray] = {}
        failures: dict[str, str] = {}
        if folder is None or not folder.is_dir():
            return vectors, failures
        missing = set(keys)
        exact = folder / f"{self.set_digest(keys)}.npz"
        files = sorted(folder.glob("*.npz"), key=lambda p: (p != exact, -p.stat().st_mtime_ns))
        dim = None
        for path in files:
            if not missing:
                break
            got = self._read(path, model_id, missing)
            if got is None:
                continue
            found, failed, file_dim = got
            if file_dim is not None:
                if dim is not None and file_dim != dim:
                    continue
                dim = file_dim
            vectors.update(found)
            failures.update(failed)
            missing -= found.keys() | failed.keys()
        return vectors, failures

    def save(
        self,
        model_id: str,
        kind: str,
        name: str,
        vectors: Mapping[str, np.ndarray],
        failures: Mapping[str, str],
        dim: int,
    ) -> Path | None:
        """Write one cache file atomically.

        Parameters
        ----------
        model_id, kind : str
            As for :meth:`load`.
        name : str
            The file name, without ``.npz``.
        vectors : mapping of str to numpy.ndarray
            Key -> vector.
        failures : mapping of str to str
            Key -> failure reason.
        dim : int
            The vector dimension (used when ``vectors`` is empty).

        Returns
        -------
        pathlib.Path or None
            The file written, or None when caching is disabled.
        """
        folder = self.folder(model_id, kind)
        if folder is None:
            return None
        keys = list(vectors)
        arrays = {
            "format": np.array(_CACHE_FORMAT),
            "model_id": np.array(model_id),
            "keys": np.array(keys, dtype=str),
            "vectors": _stack(vectors, keys, dim),
            "failed_keys": np.array(list(failures), dtype=str),
            "failed_reasons": np.array([failures[k] for k in failures], dtype=str),
        }
        path = atomic_write(folder / f"{name}.npz", lambda fh: np.savez(fh, **arrays))
        logger.debug("cache: wrote %s (%d vectors, %d failures)", path, len(keys), len(failures))
        return path

    def embed(
        self,
        encoder,
        kind: str,
        keys: Sequence[str],
        make_inputs: InputMaker,
        *,
        progress: bool = True,
        desc: str = "",
    ) -> Embedded:
        """Return vectors for unique ``keys``, from the cache where possible, else from ``encoder``.

        Parameters
        ----------
        encoder : Encoder
            Anything with ``model_id``, ``embed_texts`` and ``embed_images``.
        kind : {"text", "image"}
            Which of the encoder's methods embeds the items.
        keys : sequence of str
            Item keys (duplicates are embedded once).
        make_inputs : callable
            ``make_inputs(keys)`` returns the encoder inputs for those keys, in order, and the
            keys it cannot make an input for, as failures.
        progress : bool, default True
            Show a tqdm progress bar on stderr.
        desc : str
            The progress bar's label.

        Returns
        -------
        Embedded
            Vectors in key order, failures, and how many came from where.

        Raises
        ------
        ValueError
            The encoder's vectors have another dimension than the cached ones for its model id.
        """
        keys = list(dict.fromkeys(keys))
        model_id = encoder.model_id
        vectors, failures = self.load(model_id, kind, keys)
        n_cached = len(vectors) + len(failures)
        todo = [k for k in keys if k not in vectors and k not in failures]
        dim = next((int(v.shape[0]) for v in vectors.values()), None)
        if todo:
            new_vectors, new_failures, dim = self._embed_new(
                encoder, kind, todo, make_inputs, dim, progress=progress, desc=desc
            )
            vectors.update(new_vectors)
            failures.update(new_failures)
        if dim is None:
            dim = int(getattr(encoder, "dim", 1) or 1)
        ok = [k for k in keys if k in vectors]
        return Embedded(
            row_of={k: i for i, k in enumerate(ok)},
            vectors=_stack(vectors, ok, dim),
            failures={k: failures[k] for k in keys if k in failures},
            n_new=len(todo),
            n_cached=n_cached,
        )

    def _embed_new(self, encoder, kind, todo, make_inputs, dim, *, progress, desc):
        """Embed ``todo`` chunk by chunk; save each chunk, then one file for the whole call."""
        from tqdm.auto import tqdm

        model_id = encoder.model_id
        chunk = TEXT_CHUNK if kind == "text" else IMAGE_CHUNK
        method = encoder.embed_texts if kind == "text" else encoder.embed_images
        new_vectors: dict[str, np.ndarray] = {}
        new_failures: dict[str, str] = {}
        parts: list[Path] = []
        bar = tqdm(
            total=len(todo),
            desc=desc or f"embedding {kind}s",
            unit=kind,
            disable=not progress,
            file=sys.stderr,
        )
        with bar:
            for start in range(0, len(todo), chunk):
                batch = todo[start : start + chunk]
                inputs, pre_failed = make_inputs(batch)
                ok_keys = [k for k in batch if k not in pre_failed]
                chunk_vectors: dict[str, np.ndarray] = {}
                chunk_failures = dict(pre_failed)
                if inputs:
                    result = method(inputs, progress=False)
                    if dim is not None and len(result) and result.dim != dim:
                        raise ValueError(
                            f"{model_id}: the encoder returns {result.dim}-d vectors but the "
                            f"cache holds {dim}-d ones for this model id"
                        )
                    if len(result):
                        dim = result.dim
                    for pos, reason in result.failures.items():
                        chunk_failures[ok_keys[pos]] = reason
                    for row, pos in enumerate(result.indices.tolist()):
                        chunk_vectors[ok_keys[pos]] = result.vectors[row]
                new_vectors.update(chunk_vectors)
                new_failures.update(chunk_failures)
                if len(todo) > chunk:  # resumable: finished chunks survive an interrupted run
                    name = f"part-{self.set_digest(batch)}"
                    part = self.save(model_id, kind, name, chunk_vectors, chunk_failures, dim or 1)
                    if part is not None:
                        parts.append(part)
                bar.update(len(batch))
        # One file per call holding only what was newly embedded: nothing is stored twice.
        self.save(model_id, kind, self.set_digest(todo), new_vectors, new_failures, dim or 1)
        for part in parts:
            part.unlink(missing_ok=True)
        return new_vectors, new_failures, dim
