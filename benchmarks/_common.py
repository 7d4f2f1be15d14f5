"""Set-up code the benchmark scripts share.

* :func:`data_dir`: a work folder, a temp one deleted at the end unless ``--db``/``--tmp`` names one
  to keep;
* :func:`chroma_server`: a ``chroma run`` process on a free 127.0.0.1 port (the tests' own
  ``ChromaServer`` from ``tests/_fixtures_chroma.py``), stopped at the end;
* :class:`VectorMaker`: deterministic synthetic "text"/"image" vectors, and :func:`build_or_reuse`,
  which fills an mmgap store with them, checking a reused ``--db`` with :func:`check_bench_params`;
* :func:`load_corpus`: every stored embedding, read the way the engine reads it
  (:func:`mmgap_core.calibration.fitting.load_corpus`);
* timing helpers: :func:`time_alternating` and :func:`summary`.

The scripts import it as ``_common`` (Python puts a script's own folder on ``sys.path``), so each
one still runs standalone: ``.venv/bin/python benchmarks/bench_search.py --help``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "HOST",
    "MODEL_ID",
    "RAW_NAME",
    "REPO",
    "STORE_NAME",
    "VectorMaker",
    "bench_params",
    "build_or_reuse",
    "check_bench_params",
    "chroma_server",
    "data_dir",
    "load_corpus",
    "log",
    "summary",
    "time_alternating",
]

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only
STORE_NAME = "bench"
RAW_NAME = "bench-raw-all"
MODEL_ID = "bench:synthetic"
GENERATOR = 2  # bump when VectorMaker's output changes: a --db built by another is refused


def log(msg: str) -> None:
    """Progress on stderr, so that stdout holds only the results."""
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ dirs
@contextmanager
def data_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """A work folder: ``keep`` (created if needed, kept), else a temp folder deleted at the end.

    Parameters
    ----------
    keep : Path or None
        A folder to reuse and keep (a script's ``--db`` or ``--tmp``).
    prefix : str
        Prefix of the temp folder's name.

    Yields
    ------
    Path
    """
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ server
def _server_failed(msg: str) -> None:
    raise SystemExit(msg)


@contextmanager
def chroma_server(path: Path) -> Iterator[tuple[str, int]]:
    """Serve the data folder ``path`` with ``chroma run`` on a free 127.0.0.1 port.

    The process is the tests' ``ChromaServer`` (``tests/_fixtures_chroma.py``, which needs pytest,
    part of the ``dev`` extra); its logs go to ``<path>-logs``. No other client may hold ``path``
    open while it runs.

    Yields
    ------
    (str, int)
        Host and port for ``chromadb.HttpClient``.

    Raises
    ------
    SystemExit
        When the server does not start; the message holds its stderr.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from tests._fixtures_chroma import ChromaServer
    except ImportError as exc:  # pytest missing
        raise SystemExit(f"--http needs the dev extra (pip install -e '.[dev]'): {exc}") from exc

    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    server = ChromaServer(path, fail=_server_failed)
    server.start()
    try:
        yield server.host, server.port
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------ data
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class VectorMaker:
    """Deterministic 'text'/'image' vectors.

    ``random``: isotropic unit vectors. ``gap``: CLIP-like, ``normalise(gap_m * g_m + z)`` with a
    fixed unit modality direction ``g_m`` per modality and random content ``z`` of expected norm 1,
    so items of one modality share a cone (within-modality cosine ~ gap^2 / (1 + gap^2)).

    Parameters
    ----------
    dim : int
        Vector dimension.
    data : {"gap", "random"}
        The kind of data.
    gap : float
        Modality offset strength for ``data="gap"``.
    seed : int
        Seed of every stream.
    """

    def __init__(self, dim: int, data: str, gap: float, seed: int):
        self.dim, self.data, self.gap, self.seed = dim, data, gap, seed
        # Its own seed stream: SeedSequence ignores trailing zeros, so [seed] would equal the corpus
        # stream [seed, 0, 0, 0] and make text row 1 the image direction (a hub for image queries).
        rng = np.random.default_rng([seed, 7, 7, 7])
        self.directions = {m: _unit(rng.standard_normal((1, dim)))[0] for m in ("text", "image")}

    def make(self, modality: str, n: int, stream: int, start: int) -> np.ndarray:
        """Rows ``start .. start+n`` of a reproducible stream (stream 0: corpus, 1: queries).

        Returns
        -------
        numpy.ndarray
            ``[n, dim]`` float32 unit rows.
        """
        code = {"text": 0, "image": 1}[modality]
        rng = np.random.default_rng([self.seed, stream, code, start])
        z = rng.standard_normal((n, self.dim)).astype(np.float32) / np.sqrt(self.dim)
        if self.data == "gap":
            z += self.gap * self.directions[modality][None, :]
        return _unit(z)


def bench_params(maker: VectorMaker, n: int) -> dict[str, Any]:
    """The parameters a store of ``n`` items made by ``maker`` records in its manifest."""
    return {
        "n": n,
        "dim": maker.dim,
        "data": maker.data,
        "gap": maker.gap,
        "seed": maker.seed,
        "generator": GENERATOR,
    }


def check_bench_params(store, params: Mapping[str, Any]) -> None:
    """Record ``params`` in a new store's manifest; refuse a reused ``--db`` built with others.

    Raises
    ------
    SystemExit
        When the store records other parameters.
    """
    recorded = store.read_manifest().get("bench_params")
    if recorded is None:
        store.update_manifest(bench_params=dict(params))
    elif recorded != dict(params):
        raise SystemExit(
            f"--db holds data built with {recorded}, not {dict(params)}; use another --db"
        )


def build_or_reuse(
    client, maker: VectorMaker, n: int, batch: int, *, raw_copy: bool = True
) -> float:
    """Fill the mmgap store (and one raw collection of all items when ``raw_copy``).

    What a reused ``--db`` already holds is skipped. Items are added in order, so a stopped build
    resumes.

    Parameters
    ----------
    client : chromadb client
    maker : VectorMaker
    n : int
        Items in all, ``n // 2`` text and the rest image.
    batch : int
        Add batch size (capped by Chroma's maximum).
    raw_copy : bool, default True
        Also fill :data:`RAW_NAME`, one cosine collection of all ``n`` items.

    Returns
    -------
    float
        Build seconds.
    """
    from mmgap_core.store.chroma import ChromaStore

    per = {"text": n // 2, "image": n - n // 2}
    store = ChromaStore(client, STORE_NAME, modalities=["text", "image"])
    check_bench_params(store, bench_params(maker, n))
    raw = None
    if raw_copy:
        raw = client.get_or_create_collection(
            RAW_NAME, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
        )
    t0 = time.perf_counter()
    step = min(batch, client.get_max_batch_size())
    raw_total = raw.count() if raw is not None else 0
    for m, count in per.items():
        have_store = store.count(m)
        before = 0 if m == "text" else per["text"]
        have_raw = min(max(raw_total - before, 0), count) if raw is not None else count
        for s in range(min(have_store, have_raw) // step * step, count, step):
            e = min(s + step, count)
            vecs = maker.make(m, e - s, 0, s)
            ids = [f"{m}-{i}" for i in range(s, e)]
            if e > have_store:
                store.add(m, ids, vecs, model_id=MODEL_ID)  # skips ids already present
            if raw is not None and e > have_raw:
                present = set(raw.get(ids=ids, include=[])["ids"])
                keep = [j for j, i in enumerate(ids) if i not in present]
                if keep:
                    raw.add(
                        ids=[ids[j] for j in keep],
                        embeddings=vecs[keep],
                        metadatas=[{"modality": m}] * len(keep),
                    )
            done = e + before
            elapsed = time.perf_counter() - t0
            copies = "x2 copies" if raw is not None else "1 copy"
            log(
                f"  built {done}/{n} items ({copies}) {elapsed:7.1f} s "
                f"({done / max(elapsed, 1e-9):.0f} items/s per copy)"
            )
    return time.perf_counter() - t0


def load_corpus(store) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every stored embedding, as the engine reads it.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, list of str)
        ``vectors [N, d]`` float32, ``labels [N]`` (each row's modality) and ``ids``.
    """
    from mmgap_core.calibration.fitting import load_corpus as engine_load_corpus

    corpus = engine_load_corpus(store)
    return corpus.vectors, corpus.labels, corpus.ids


# ------------------------------------------------------------------------------------------ timing
def summary(ms: list[float]) -> dict[str, float]:
    """Median, p10, p90, mean and min of latencies in ms, and their count."""
    return {
        "median_ms": statistics.median(ms),
        "p10_ms": float(np.percentile(np.asarray(ms), 10)),
        "p90_ms": float(np.percentile(np.asarray(ms), 90)),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "n": len(ms),
    }


def time_alternating(
    fns: Mapping[str, Callable[[Any], Any]], inputs, warmup: int
) -> dict[str, list[float]]:
    """Per function, ms per call on each input; the functions alternate, so all see the same load.

    The first ``warmup`` inputs are run untimed. Then, input by input, every function is timed
    once, in an order that rotates by one each input (no function is always first).

    Returns
    -------
    dict of str to list of float
    """
    names = list(fns)
    for x in inputs[:warmup]:
        for name in names:
            fns[name](x)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i, x in enumerate(inputs[warmup:]):
        r = i % len(names)
        for name in names[r:] + names[:r]:
            t0 = time.perf_counter()
            fns[name](x)
            out[name].append((time.perf_counter() - t0) * 1e3)
    return out
