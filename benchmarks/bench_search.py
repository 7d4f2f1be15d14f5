"""Search latency of ``RetrievalEngine.search`` (precomputed query embedding) against one raw Chroma query.

The same N vectors (half "text", half "image", 512-d float32 unit rows) are stored twice in one
embedded ``chromadb.PersistentClient`` in a temp dir:

* as an mmgap store (``ChromaStore``: one cosine collection per modality, N/2 items each), searched
  with ``engine.search(embedding=q, query_modality=..., k=10, k_per_modality=10)`` (calibrated,
  method ``standardize``; calibrated once before timing);
* as ONE cosine collection of all N items, queried with
  ``collection.query(query_embeddings=[q], n_results=10)`` (Chroma's default include).

Each query vector is new (not in the store). Both paths are warmed up, then timed alternately on
the same query vectors (so both see the same machine load); the report gives the median and p90
latency of each and the ratio of the medians (goal: engine / raw <= 1.25). A breakdown times the
engine's parts (``store.query_per_modality`` alone and each per-modality collection query).

With ``--http`` the same data is then served by a ``chroma run`` process on 127.0.0.1 (a free port,
same data directory after the embedded client is closed) and timed again through ``HttpClient``.

    python benchmarks/bench_search.py                         # N=100000 (builds 2 x 100k HNSW: slow)
    python benchmarks/bench_search.py --n 10000 --queries 200 # quick run
    python benchmarks/bench_search.py --db /tmp/bench-db      # keep the built data; reuse it next time
    python benchmarks/bench_search.py --db /tmp/bench-db --http --json out.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

STORE_NAME = "bench"
RAW_NAME = "bench-raw-all"
MODEL_ID = "bench:synthetic"
HOST = "127.0.0.1"  # loopback only


# ------------------------------------------------------------------------------------------ data
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class VectorMaker:
    """Deterministic 'text'/'image' vectors.

    ``random``: isotropic unit vectors. ``gap``: CLIP-like, ``normalise(gap_m * g_m + z)`` with a
    fixed unit modality direction ``g_m`` per modality and random content ``z`` of expected norm 1,
    so items of one modality share a cone (within-modality cosine ~ gap^2 / (1 + gap^2)).
    """

    def __init__(self, dim: int, data: str, gap: float, seed: int):
        self.dim, self.data, self.gap, self.seed = dim, data, gap, seed
        # Its own seed stream: SeedSequence ignores trailing zeros, so [seed] would equal the corpus
        # stream [seed, 0, 0, 0] and make text row 1 the image direction (a hub for image queries).
        rng = np.random.default_rng([seed, 7, 7, 7])
        self.directions = {m: _unit(rng.standard_normal((1, dim)))[0] for m in ("text", "image")}

    def make(self, modality: str, n: int, stream: int, start: int) -> np.ndarray:
        """Rows ``start .. start+n`` of a reproducible stream (stream 0: corpus, 1: queries)."""
        code = {"text": 0, "image": 1}[modality]
        rng = np.random.default_rng([self.seed, stream, code, start])
        z = rng.standard_normal((n, self.dim)).astype(np.float32) / np.sqrt(self.dim)
        if self.data == "gap":
            z += self.gap * self.directions[modality][None, :]
        return _unit(z)


# ------------------------------------------------------------------------------------------ build
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_or_reuse(
    client, maker: VectorMaker, n: int, batch: int, *, raw_copy: bool = True
) -> float:
    """Fill the mmgap store (and the single raw collection when ``raw_copy``), skipping what a reused
    --db already holds; returns the build seconds. Items are added in order, so a stopped build resumes."""
    from mmgap_core.store.chroma import ChromaStore

    per = {"text": n // 2, "image": n - n // 2}
    params = {
        "n": n,
        "dim": maker.dim,
        "data": maker.data,
        "gap": maker.gap,
        "seed": maker.seed,
        "generator": 2,
    }
    store = ChromaStore(client, STORE_NAME, modalities=["text", "image"])
    recorded = store.read_manifest().get("bench_params")
    if recorded is None:
        store.update_manifest(bench_params=params)
    elif recorded != params:
        raise SystemExit(f"--db holds data built with {recorded}, not {params}; use another --db")
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
            rate = done / max(time.perf_counter() - t0, 1e-9)
            copies = "x2 copies" if raw is not None else "1 copy"
            _log(
                f"  built {done}/{n} items ({copies}) {time.perf_counter() - t0:7.1f} s "
                f"({rate:.0f} items/s per copy)"
            )
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ timing
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(ms),
        "p90_ms": pct(ms, 90),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "n": len(ms),
    }


def time_alternating(fns: dict, queries: np.ndarray, warmup: int) -> dict[str, list[float]]:
    """Per function, ms per call over every query row; the functions alternate (order flipped each row)."""
    names = list(fns)
    for i in range(min(warmup, len(queries))):
        for name in names:
            fns[name](queries[i])
    out: dict[str, list[float]] = {name: [] for name in names}
    for i, q in enumerate(queries):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            fns[name](q)
            out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def run_suite(client, maker, args, label: str) -> dict:
    """Calibrate (if asked), warm up, time engine vs raw and the breakdown, on one client."""
    from mmgap_core.engine import RetrievalEngine
    from mmgap_core.store.chroma import ChromaStore

    store = ChromaStore(client, STORE_NAME)
    engine = RetrievalEngine(store)
    raw = client.get_collection(RAW_NAME, embedding_function=None)
    cal_s = None
    if args.recalibrate or not engine.is_calibrated:
        t0 = time.perf_counter()
        engine.calibrate(sample=args.calibration_sample, progress=False)
        cal_s = time.perf_counter() - t0
        _log(f"[{label}] calibrated in {cal_s:.1f} s")
    qmod = args.query_modality
    queries = maker.make(qmod, args.queries + args.warmup, 1, 0)
    warm, timed = queries[: args.warmup], queries[args.warmup :]
    cols = {
        m: client.get_collection(store.collection_name(m), embedding_function=None)
        for m in ("text", "image")
    }
    pool = ThreadPoolExecutor(1)

    fns = {
        "engine.search": lambda q: engine.search(
            embedding=q, query_modality=qmod, k=args.k, k_per_modality=args.k_per_modality
        ),
        "raw query (1 collection)": lambda q: raw.query(query_embeddings=[q], n_results=args.k),
    }
    parts = {
        "store.query_per_modality": lambda q: store.query_per_modality(
            q[None, :], args.k_per_modality
        ),
        "raw query text collection": lambda q: cols["text"].query(
            query_embeddings=[q], n_results=args.k_per_modality
        ),
        "raw query image collection": lambda q: cols["image"].query(
            query_embeddings=[q], n_results=args.k_per_modality
        ),
        # The floor for any one-collection-per-modality search: both Chroma calls, concurrently.
        "raw text+image queries, concurrent": lambda q: both_raw(q),
    }
    include = ["distances", "documents", "uris", "metadatas"]  # what ChromaStore.query asks for

    def both_raw(q):
        other = pool.submit(
            cols["image"].query,
            query_embeddings=[q],
            n_results=args.k_per_modality,
            include=include,
        )
        cols["text"].query(query_embeddings=[q], n_results=args.k_per_modality, include=include)
        other.result()

    # Sanity: the engine answers k hits from both modalities' collections.
    res = fns["engine.search"](timed[0])
    if len(res.hits) != args.k:
        raise SystemExit(f"engine.search returned {len(res.hits)} hits, expected {args.k}")
    _log(f"[{label}] timing {len(timed)} queries (warm-up {len(warm)})")
    main_ms = time_alternating(fns, np.concatenate([warm, timed]), len(warm))
    part_ms = time_alternating(parts, np.concatenate([warm, timed]), len(warm))
    pool.shutdown()
    rows = {name: summary(v) for name, v in {**main_ms, **part_ms}.items()}
    eng, rawq = rows["engine.search"], rows["raw query (1 collection)"]
    out = {
        "client": label,
        "calibration_s": cal_s,
        "rows": rows,
        "ratio_median": eng["median_ms"] / rawq["median_ms"],
        "ratio_p90": eng["p90_ms"] / rawq["p90_ms"],
        "floor_ratio_median": rows["raw text+image queries, concurrent"]["median_ms"]
        / rawq["median_ms"],
        "goal_ratio": args.goal,
    }
    out["goal_met"] = out["ratio_median"] <= args.goal
    if args.profile and label == "embedded":
        prof = cProfile.Profile()
        prof.enable()
        for q in timed:
            fns["engine.search"](q)
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(args.profile_top)
        out["profile"] = s.getvalue()
    return out


def print_table(res: dict) -> None:
    print(f"\n{res['client']} client: latency per query (ms)")
    print(f"  {'path':36s} {'median':>8s} {'p90':>8s} {'mean':>8s} {'min':>8s}")
    for name, r in res["rows"].items():
        print(
            f"  {name:36s} {r['median_ms']:8.2f} {r['p90_ms']:8.2f} {r['mean_ms']:8.2f} {r['min_ms']:8.2f}"
        )
    verdict = "met" if res["goal_met"] else "MISSED"
    print(
        f"  ratio engine/raw: median {res['ratio_median']:.3f}, p90 {res['ratio_p90']:.3f} "
        f"(goal median <= {res['goal_ratio']}: {verdict})"
    )
    print(
        f"  floor: both raw per-modality queries, concurrent / raw: median "
        f"{res['floor_ratio_median']:.3f}"
    )
    if res.get("profile"):
        print("\ncProfile of engine.search (cumulative):")
        print(res["profile"])


# ------------------------------------------------------------------------------------------ server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(path: Path, log_dir: Path) -> tuple[subprocess.Popen, int]:
    import chromadb

    exe = Path(sys.executable).parent / "chroma"
    if not exe.exists():
        raise SystemExit(f"`chroma` console script not found next to the interpreter: {exe}")
    port = _free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    with (
        open(log_dir / "chroma-stdout.log", "wb") as out,
        open(log_dir / "chroma-stderr.log", "wb") as err,
    ):
        proc = subprocess.Popen(
            [str(exe), "run", "--path", str(path), "--host", HOST, "--port", str(port)],
            stdout=out,
            stderr=err,
            env=dict(os.environ, ANONYMIZED_TELEMETRY="False"),
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"`chroma run` exited with {proc.returncode}; see {log_dir}")
        try:
            chromadb.HttpClient(host=HOST, port=port).heartbeat()
            return proc, port
        except Exception:  # noqa: BLE001 - not serving yet
            time.sleep(0.2)
    stop_server(proc)
    raise SystemExit("`chroma run` gave no heartbeat within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="total items (half text, half image)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument(
        "--data",
        choices=["gap", "random"],
        default="gap",
        help="gap: per-modality offset (CLIP-like cones); random: isotropic unit vectors",
    )
    ap.add_argument(
        "--gap", type=float, default=1.0, help="modality offset strength for --data gap"
    )
    ap.add_argument("--queries", type=int, default=300, help="timed queries per path")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--k-per-modality", type=int, default=10)
    ap.add_argument("--query-modality", choices=["text", "image"], default="text")
    ap.add_argument("--calibration-sample", type=int, default=1000)
    ap.add_argument("--recalibrate", action="store_true", help="calibrate even if a reused --db is")
    ap.add_argument(
        "--batch", type=int, default=5000, help="add batch size (capped by Chroma's max)"
    )
    ap.add_argument(
        "--db",
        type=Path,
        default=None,
        help="data directory to keep and reuse (default: a temp dir, deleted at the end)",
    )
    ap.add_argument(
        "--http", action="store_true", help="also time through a local `chroma run` server"
    )
    ap.add_argument(
        "--profile", action="store_true", help="cProfile engine.search (embedded client)"
    )
    ap.add_argument("--profile-top", type=int, default=30)
    ap.add_argument("--goal", type=float, default=1.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--json", metavar="OUT", type=Path, default=None, help="write the results as JSON"
    )
    args = ap.parse_args(argv)
    if args.n < 4 or args.k < 1 or args.k_per_modality < args.k or args.queries < 1:
        ap.error("need --n >= 4, --k >= 1, --k-per-modality >= --k, --queries >= 1")

    import chromadb

    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    tmp = None
    if args.db is None:
        tmp = Path(tempfile.mkdtemp(prefix="mmgap-bench-search-"))
        db = tmp / "db"
    else:
        db = args.db
    db.mkdir(parents=True, exist_ok=True)
    maker = VectorMaker(args.dim, args.data, args.gap, args.seed)
    results: dict = {
        "n": args.n,
        "dim": args.dim,
        "data": args.data,
        "gap": args.gap,
        "k": args.k,
        "k_per_modality": args.k_per_modality,
        "queries": args.queries,
        "warmup": args.warmup,
        "query_modality": args.query_modality,
        "cpu_count": os.cpu_count(),
        "chromadb": chromadb.__version__,
        "suites": [],
    }
    try:
        client = chromadb.PersistentClient(path=str(db))
        _log(f"building/reusing {args.n} items x 2 copies in {db}")
        results["build_s"] = build_or_reuse(client, maker, args.n, args.batch)
        res = run_suite(client, maker, args, "embedded")
        results["suites"].append(res)
        print_table(res)
        client.close()
        if args.http:
            proc, port = start_server(db, (tmp or db.parent) / "chroma-logs")
            try:
                hres = run_suite(chromadb.HttpClient(host=HOST, port=port), maker, args, "http")
            finally:
                stop_server(proc)
            results["suites"].append(hres)
            print_table(hres)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
