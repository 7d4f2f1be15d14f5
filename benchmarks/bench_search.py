"""Search latency of ``RetrievalEngine.search`` against the raw Chroma queries it is built on.

The same N vectors (half "text", half "image", 512-d float32 unit rows) are stored twice in one
embedded ``chromadb.PersistentClient``:

* as an mmgap store (``ChromaStore``: one cosine collection per modality, N/2 items each), searched
  with ``engine.search(embedding=q, query_modality=..., k=10, k_per_modality=10)`` (``--method``,
  default the engine's default; the store is calibrated once, before timing);
* as ONE cosine collection of all N items, queried with
  ``collection.query(query_embeddings=[q], n_results=10)`` (Chroma's default include).

Three paths are timed in one loop, in rotating order, on the same new query vectors (none is
stored), so all see the same machine load:

* ``engine.search``;
* both raw per-modality collection queries run concurrently (the fields ``ChromaStore`` asks for,
  one on the store's long-lived query thread, one in the calling thread, as the store runs them):
  the floor of any search over one collection per modality. Speed guard: engine / this <= 1.10;
* one raw query of the single N-item collection (the older goal: engine / this <= 1.25);
* ``store.query_per_modality`` alone (the store layer under the engine).

A breakdown then times each raw collection query alone, and the engine's own work
(``engine.search`` with the store's answer replayed, no Chroma call). ``--fusion`` adds the cost of
each fusion method per query at 2 x ``--fusion-k`` candidates (store hits of real queries), one
query a call and in batches.

With ``--http`` the same data is then served by ``chroma run`` on 127.0.0.1 (a free port, the same
data folder once the embedded client is closed) and timed again through ``HttpClient``.

    python benchmarks/bench_search.py                          # N=100000: builds 2 x 100k HNSW
    python benchmarks/bench_search.py --n 10000 --queries 200  # quick run
    python benchmarks/bench_search.py --db /tmp/bench-db       # keep the data; reuse it next time
    python benchmarks/bench_search.py --db /tmp/bench-db --fusion --profile --json out.json
    python benchmarks/bench_search.py --db /tmp/bench-db --http
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
from _common import (  # noqa: F401 - STORE_NAME, VectorMaker, build_or_reuse: bench_calibration
    HOST,
    RAW_NAME,
    STORE_NAME,
    VectorMaker,
    build_or_reuse,
    chroma_server,
    data_dir,
    log,
    summary,
    time_alternating,
)

ENGINE = "engine.search"
BOTH = "raw text+image queries, concurrent"
ONE = "raw query (1 collection)"
STORE = "store.query_per_modality"
INCLUDE = ["distances", "documents", "uris", "metadatas"]  # what ChromaStore.query asks for


# ------------------------------------------------------------------------------------------ paths
def _paths(client, engine, store, args):
    """(main paths, breakdown paths): name -> function of one query vector."""
    from mmgap_core.store.chroma_query import run_per_modality

    qmod, k, kpm = args.query_modality, args.k, args.k_per_modality
    raw = client.get_collection(RAW_NAME, embedding_function=None)
    cols = {
        m: client.get_collection(store.collection_name(m), embedding_function=None)
        for m in ("text", "image")
    }
    # The engine's modality order: the same collection goes to the same thread on both paths.
    order = list(store.counts())

    def both_raw(q):
        # The store's own concurrency: one long-lived pool thread plus the calling thread. A pool
        # of the benchmark's own would put the query on another thread, which on a loaded machine
        # may sit on a busier core: a bias of up to ~1 ms either way, measured.
        run_per_modality(
            lambda m: cols[m].query(query_embeddings=[q], n_results=kpm, include=INCLUDE), order
        )

    ks = {"text": kpm, "image": kpm}
    main = {
        ENGINE: lambda q: engine.search(
            embedding=q, query_modality=qmod, k=k, k_per_modality=kpm, method=args.method
        ),
        BOTH: both_raw,
        ONE: lambda q: raw.query(query_embeddings=[q], n_results=k),
        # The store layer alone: what engine.search adds on top of it is the engine's own work.
        STORE: lambda q: store.query_per_modality(q[None, :], ks),
    }
    parts = {
        "raw query text collection": lambda q: cols["text"].query(
            query_embeddings=[q], n_results=kpm, include=INCLUDE
        ),
        "raw query image collection": lambda q: cols["image"].query(
            query_embeddings=[q], n_results=kpm, include=INCLUDE
        ),
    }
    return main, parts


class _Replay:
    """Stands in for ``store.query_per_modality``: hands back recorded answers in turn."""

    def __init__(self, answers):
        self.answers, self.i = answers, 0

    def __call__(self, *_args, **_kw):
        self.i = (self.i + 1) % len(self.answers)
        return self.answers[self.i]


def engine_own_work(engine, store, queries: np.ndarray, args) -> dict[str, float]:
    """``engine.search`` with the store's answer replayed: the engine's work without Chroma (µs)."""
    from mmgap_core.fusion import method_class

    kpm = args.k_per_modality
    emb = method_class(args.method).needs_candidate_embeddings  # as the search asks the store
    answers = [
        store.query_per_modality(q[None, :], {"text": kpm, "image": kpm}, include_embeddings=emb)
        for q in queries
    ]
    store.query_per_modality = _Replay(answers)  # an instance attribute shadows the method
    try:
        us = []
        for rep in range(3):
            for q in queries:
                t0 = time.perf_counter()
                engine.search(
                    embedding=q,
                    query_modality=args.query_modality,
                    k=args.k,
                    k_per_modality=kpm,
                    method=args.method,
                )
                if rep:  # the first pass warms up
                    us.append((time.perf_counter() - t0) * 1e6)
    finally:
        del store.query_per_modality
    return {"median_us": float(np.median(us)), "p90_us": float(np.percentile(us, 90))}


def fusion_costs(engine, store, queries: np.ndarray, args) -> dict[str, dict[str, float]]:
    """Per fusion method, µs per query to fuse 2 x ``fusion_k`` store candidates to the top ``k``.

    ``single``: one query a call, through a batch; ``batched``: all queries in one
    call, divided by their number. ``standardize-gold`` costs what ``standardize`` does (it needs
    labelled pairs, so it is not run here). ``NAME (fuse_one)``: the plain-Python single-query
    shortcut ``engine.search`` takes, for methods that have one.
    """
    from mmgap_core.candidates import CandidateBatch
    from mmgap_core.fusion import METHOD_NAMES, method_class
    from mmgap_core.method_cache import MethodCache

    record = engine.calibration
    counts = store.counts()
    qmod, kf = args.query_modality, args.fusion_k
    hits = store.query_per_modality(queries, {"text": kf, "image": kf}, include_embeddings=True)
    batch = CandidateBatch.from_hits(hits, qmod, queries)
    singles, hit_rows = [], []
    for i in range(len(queries)):
        one = {m: _hits_row(h, i) for m, h in hits.items()}
        hit_rows.append(one)
        singles.append(CandidateBatch.from_hits(one, qmod, queries[i : i + 1]))
    out = {}
    for name in METHOD_NAMES:
        if name == "standardize-gold":
            continue
        # Built from the calibration as a search builds it (its directions included).
        method = MethodCache().get(name, method_class(name), record, counts)
        for b in singles[:20]:
            method.fuse(b, args.k)
        t0 = time.perf_counter()
        for _ in range(3):
            for b in singles:
                method.fuse(b, args.k)
        single_us = (time.perf_counter() - t0) / (3 * len(singles)) * 1e6
        t0 = time.perf_counter()
        for _ in range(3):
            method.fuse(batch, args.k)
        batched_us = (time.perf_counter() - t0) / (3 * len(queries)) * 1e6
        out[name] = {"single_us": single_us, "batched_us": batched_us}
        # The single-query shortcut a search takes (FusionMethod.fuse_one), if the method has one.
        rows = [
            (
                {m: h.scores[0].tolist() for m, h in one.items()},
                dict(query=queries[i], embeddings={m: h.embeddings[0] for m, h in one.items()}),
            )
            for i, one in enumerate(hit_rows)
        ]
        if method.fuse_one(rows[0][0], qmod, args.k, **rows[0][1]) is not None:
            t0 = time.perf_counter()
            for _ in range(3):
                for r, kw in rows:
                    method.fuse_one(r, qmod, args.k, **kw)
            one_us = (time.perf_counter() - t0) / (3 * len(rows)) * 1e6
            out[f"{name} (fuse_one)"] = {"single_us": one_us, "batched_us": float("nan")}
    return out


def _hits_row(h, i: int):
    """Row ``i`` of a ``ModalityHits``, as a one-query ``ModalityHits``."""
    from mmgap_core.store.base import ModalityHits

    return ModalityHits(
        modality=h.modality,
        ids=[h.ids[i]],
        scores=h.scores[i : i + 1],
        documents=[h.documents[i]],
        uris=[h.uris[i]],
        metadatas=[h.metadatas[i]],
        embeddings=None if h.embeddings is None else h.embeddings[i : i + 1],
    )


# ------------------------------------------------------------------------------------------ suite
def run_suite(client, maker: VectorMaker, args, label: str) -> dict:
    """Calibrate (if needed), then time the main paths and the breakdown on one client."""
    from mmgap_core.engine import RetrievalEngine
    from mmgap_core.store.chroma import ChromaStore

    store = ChromaStore(client, STORE_NAME)
    engine = RetrievalEngine(store)
    cal_s = None
    needs = args.recalibrate or not engine.is_calibrated
    if not needs:
        try:
            engine.search(
                embedding=maker.make(args.query_modality, 1, 1, 0)[0],
                query_modality=args.query_modality,
                k=args.k,
                k_per_modality=args.k_per_modality,
                method=args.method,
            )
        except Exception as exc:  # noqa: BLE001 - e.g. a calibration made before this method
            log(f"[{label}] recalibrating: {exc}")
            needs = True
    if needs:
        t0 = time.perf_counter()
        engine.calibrate(sample=args.calibration_sample, progress=False)
        cal_s = time.perf_counter() - t0
        log(f"[{label}] calibrated in {cal_s:.1f} s")
    queries = maker.make(args.query_modality, args.queries + args.warmup, 1, 0)
    main, parts = _paths(client, engine, store, args)
    res = main[ENGINE](queries[-1])
    if len(res.hits) != args.k:
        raise SystemExit(f"engine.search returned {len(res.hits)} hits, expected {args.k}")
    log(f"[{label}] timing {args.queries} queries (warm-up {args.warmup}), {len(main)} paths")
    main_ms = time_alternating(main, queries, args.warmup)
    part_ms = time_alternating(parts, queries, args.warmup)
    rows = {name: summary(v) for name, v in {**main_ms, **part_ms}.items()}
    eng, both, one = rows[ENGINE]["median_ms"], rows[BOTH]["median_ms"], rows[ONE]["median_ms"]
    out = {
        "client": label,
        "method": args.method,
        "calibration_s": cal_s,
        "load_avg_1min": os.getloadavg()[0],
        "rows": rows,
        "ratio_vs_concurrent": eng / both,
        "ratio_vs_one": eng / one,
        "floor_ratio": both / one,
        # Under heavy machine load the medians carry scheduling delays; the fast tail less so.
        "p10_ratio_vs_concurrent": rows[ENGINE]["p10_ms"] / rows[BOTH]["p10_ms"],
        "p10_ratio_vs_one": rows[ENGINE]["p10_ms"] / rows[ONE]["p10_ms"],
        "goal_vs_concurrent": args.goal,
        "goal_vs_one": args.goal_one,
    }
    out["goal_met"] = out["ratio_vs_concurrent"] <= args.goal
    out["goal_one_met"] = out["ratio_vs_one"] <= args.goal_one
    if label == "embedded":
        own = queries[args.warmup : args.warmup + 200]
        out["engine_own_work"] = engine_own_work(engine, store, own, args)
        if args.fusion:
            fq = maker.make(args.query_modality, args.fusion_queries, 1, 10**6)
            out["fusion_k"] = args.fusion_k
            out["fusion_us"] = fusion_costs(engine, store, fq, args)
        if args.profile:
            out["profile"] = _profile(main[ENGINE], queries, args.profile_searches, args)
    return out


def _profile(search, queries: np.ndarray, n: int, args) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        search(queries[i % len(queries)])
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats(args.profile_sort).print_stats(args.profile_top)
    return f"{n} searches\n" + s.getvalue()


def print_table(res: dict) -> None:
    print(f"\n{res['client']} client, method {res['method']}: latency per query (ms)")
    print(f"  {'path':36s} {'median':>8s} {'p10':>8s} {'p90':>8s} {'mean':>8s} {'min':>8s}")
    for name, r in res["rows"].items():
        print(
            f"  {name:36s} {r['median_ms']:8.2f} {r['p10_ms']:8.2f} {r['p90_ms']:8.2f} "
            f"{r['mean_ms']:8.2f} {r['min_ms']:8.2f}"
        )
    for key, goal, what in (
        ("ratio_vs_concurrent", "goal_vs_concurrent", "both raw per-modality queries, concurrent"),
        ("ratio_vs_one", "goal_vs_one", "one raw query of a single collection"),
    ):
        met = "met" if res[key] <= res[goal] else "MISSED"
        print(f"  engine / {what}: median {res[key]:.3f} (goal <= {res[goal]}: {met})")
    print(
        f"  (ratios of p10: {res['p10_ratio_vs_concurrent']:.3f} against both, "
        f"{res['p10_ratio_vs_one']:.3f} against one)"
    )
    print(f"  floor: both concurrent / one raw query: median {res['floor_ratio']:.3f}")
    print(f"  load average (1 min) at the end: {res['load_avg_1min']:.2f}")
    if "engine_own_work" in res:
        own = res["engine_own_work"]
        print(
            f"  engine's own work (store answer replayed): median {own['median_us']:.0f} µs, "
            f"p90 {own['p90_us']:.0f} µs"
        )
    if "fusion_us" in res:
        print(f"\nfusion cost per query, 2 x {res['fusion_k']} candidates -> top k (µs)")
        print(f"  {'method':18s} {'one query a call':>17s} {'batched':>9s}")
        for name, r in res["fusion_us"].items():
            print(f"  {name:18s} {r['single_us']:17.1f} {r['batched_us']:9.1f}")
    if res.get("profile"):
        print("\ncProfile of engine.search:")
        print(res["profile"])


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    from mmgap_core.fusion import DEFAULT_METHOD, METHOD_NAMES

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
    ap.add_argument("--gap", type=float, default=1.0, help="modality offset for --data gap")
    ap.add_argument("--queries", type=int, default=300, help="timed queries per path")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--k-per-modality", type=int, default=10)
    ap.add_argument("--method", choices=METHOD_NAMES, default=DEFAULT_METHOD)
    ap.add_argument("--query-modality", choices=["text", "image"], default="text")
    ap.add_argument("--calibration-sample", type=int, default=1000)
    ap.add_argument("--recalibrate", action="store_true", help="calibrate even if a reused --db is")
    ap.add_argument("--batch", type=int, default=5000, help="add batch size (capped by Chroma)")
    ap.add_argument(
        "--db",
        type=Path,
        default=None,
        help="data folder to keep and reuse (default: a temp folder, deleted at the end)",
    )
    ap.add_argument("--http", action="store_true", help="also time through `chroma run`")
    ap.add_argument("--fusion", action="store_true", help="time each fusion method per query")
    ap.add_argument("--fusion-k", type=int, default=50, help="candidates per modality, --fusion")
    ap.add_argument("--fusion-queries", type=int, default=200)
    ap.add_argument("--profile", action="store_true", help="cProfile engine.search (embedded)")
    ap.add_argument("--profile-searches", type=int, default=2000)
    ap.add_argument("--profile-sort", choices=["tottime", "cumulative"], default="tottime")
    ap.add_argument("--profile-top", type=int, default=30)
    ap.add_argument("--goal", type=float, default=1.10, help="engine / both raw queries, at most")
    ap.add_argument("--goal-one", type=float, default=1.25, help="engine / one raw query, at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT", type=Path, default=None, help="write results as JSON")
    args = ap.parse_args(argv)
    if args.n < 4 or args.k < 1 or args.k_per_modality < args.k or args.queries < 1:
        ap.error("need --n >= 4, --k >= 1, --k-per-modality >= --k, --queries >= 1")
    if args.fusion_k < args.k or args.fusion_queries < 1:
        ap.error("need --fusion-k >= --k and --fusion-queries >= 1")

    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import chromadb

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
    with data_dir(args.db, "mmgap-bench-search-") as folder:
        db = folder if args.db is not None else folder / "db"  # server logs go next to it
        client = chromadb.PersistentClient(path=str(db))
        log(f"building/reusing {args.n} items x 2 copies in {db}")
        results["build_s"] = build_or_reuse(client, maker, args.n, args.batch)
        res = run_suite(client, maker, args, "embedded")
        results["suites"].append(res)
        print_table(res)
        client.close()
        if args.http:
            with chroma_server(db) as (host, port):
                assert host == HOST
                http = chromadb.HttpClient(host=host, port=port)
                hres = run_suite(http, maker, args, "http")
            results["suites"].append(hres)
            print_table(hres)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
