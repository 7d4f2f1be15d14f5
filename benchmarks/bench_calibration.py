"""Calibration through the store (HNSW nearest-neighbour queries) against exact in-memory mining.

One mmgap store of N synthetic 512-d items (half text, half image, see ``bench_search.VectorMaker``)
in an embedded ``chromadb.PersistentClient``. Calibration samples ``--sample`` items of each
modality from the store (self-excluded) and fits the per-(query, candidate modality) mean/std of
each query's top-1 cosine. Timed, alternately, ``--repeats`` times each:

* ``store``: ``engine.calibrate(exact_max_items=0)``: batched ``store.query_per_modality`` (256
  queries a call, one collection per modality, k=2 so the query itself can be dropped);
* ``exact``: ``engine.calibrate()`` with the default exact path: every embedding is read back from
  the store, then ``mine_pseudo_positives`` (blocked BLAS matmul) finds the true top-1;
* ``exact mining only``: ``mine_pseudo_positives`` on the same queries with the corpus already in
  memory (what the exact path costs without reading the store).

Agreement: for the same sampled queries, the share of (query, candidate modality) pairs for which
the store path picks the same pseudo-positive id as exact mining, how much lower its score is when
not (HNSW misses), and the difference of the fitted mean/std per key.

    python benchmarks/bench_calibration.py                        # N=20000, 1000 queries/modality
    python benchmarks/bench_calibration.py --n 100000 --db /tmp/bench-db   # reuses bench_search's --db
    python benchmarks/bench_calibration.py --n 4000 --sample 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import STORE_NAME, VectorMaker, build_or_reuse  # noqa: E402


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def store_picks(store, queries: np.ndarray, self_ids: list[str], batch: int = 256):
    """Per modality: (picked id, score) per query, with the engine's store-path rule (k=2, drop self)."""
    ids: dict[str, list[str | None]] = {}
    scores: dict[str, list[float]] = {}
    for s in range(0, queries.shape[0], batch):
        hits = store.query_per_modality(queries[s : s + batch], 2)
        for m, h in hits.items():
            for r, row_ids in enumerate(h.ids):
                pick, score = None, float("nan")
                for j, cid in enumerate(row_ids):
                    if cid == self_ids[s + r]:
                        continue
                    pick, score = cid, float(h.scores[r, j])
                    break
                ids.setdefault(m, []).append(pick)
                scores.setdefault(m, []).append(score)
    return ids, scores


def exact_picks(queries, corpus, labels, corpus_ids, self_ids):
    """Per modality: (picked id, score) per query, by exact mining with self-exclusion."""
    from mmgap_core.mining import mine_pseudo_positives

    row = {cid: i for i, cid in enumerate(corpus_ids)}
    exclude = np.asarray([row.get(cid, -1) for cid in self_ids], dtype=np.int64)
    res = mine_pseudo_positives(queries, corpus, labels, exclude=exclude)
    ids, scores = {}, {}
    for m in res.modalities:
        idx, sc = res.of(m)
        ids[m] = [corpus_ids[i] if i >= 0 else None for i in idx[:, 0]]
        scores[m] = sc[:, 0].astype(float).tolist()
    return ids, scores


def load_corpus(store):
    embs, labels, ids = [], [], []
    for m in store.modalities():
        for batch_ids, e in store.iter_embeddings(m):
            embs.append(e)
            labels.extend([m] * len(batch_ids))
            ids.extend(batch_ids)
    return np.concatenate(embs), np.asarray(labels), ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20_000, help="total items (half text, half image)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--data", choices=["gap", "random"], default="gap")
    ap.add_argument("--gap", type=float, default=1.0)
    ap.add_argument("--sample", type=int, default=1000, help="calibration queries per modality")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--batch", type=int, default=5000, help="add batch size (capped by Chroma's max)"
    )
    ap.add_argument(
        "--db",
        type=Path,
        default=None,
        help="data directory to keep and reuse (bench_search's --db works for the same --n)",
    )
    ap.add_argument(
        "--ef-search",
        type=int,
        default=None,
        help="HNSW ef_search of the modality collections during the run (Chroma's default "
        "is 100); written to the collections' configuration, restored at the end",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--json", metavar="OUT", type=Path, default=None, help="write the results as JSON"
    )
    args = ap.parse_args(argv)
    if args.n < 4 or args.sample < 2 or args.repeats < 1:
        ap.error("need --n >= 4, --sample >= 2, --repeats >= 1")

    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import warnings

    import chromadb

    from mmgap_core.engine import RetrievalEngine
    from mmgap_core.store.chroma import ChromaStore

    tmp = None
    if args.db is None:
        tmp = Path(tempfile.mkdtemp(prefix="mmgap-bench-cal-"))
        db = tmp / "db"
    else:
        db = args.db
    db.mkdir(parents=True, exist_ok=True)
    maker = VectorMaker(args.dim, args.data, args.gap, args.seed)
    try:
        client = chromadb.PersistentClient(path=str(db))
        _log(f"building/reusing {args.n} items in {db}")
        build_s = build_or_reuse(client, maker, args.n, args.batch, raw_copy=False)
        store = ChromaStore(client, STORE_NAME)
        engine = RetrievalEngine(store)
        restore = {}
        if args.ef_search is not None:
            for m in store.modalities():
                col = client.get_collection(store.collection_name(m), embedding_function=None)
                restore[m] = (col.configuration_json.get("hnsw") or {}).get("ef_search", 100)
                col.modify(configuration={"hnsw": {"ef_search": args.ef_search}})
            # An embedded client keeps searching with the ef_search its loaded index had: reopen.
            client.close()
            client = chromadb.PersistentClient(path=str(db))
            store = ChromaStore(client, STORE_NAME)
            engine = RetrievalEngine(store)
        times: dict[str, list[float]] = {"store": [], "exact": [], "exact mining only": []}
        fitted = {}

        # Same queries as the engine draws (sample_documents with the same seed).
        t0 = time.perf_counter()
        corpus, labels, corpus_ids = load_corpus(store)
        load_s = time.perf_counter() - t0
        query_sets = {
            m: store.sample_documents(m, args.sample, args.seed) for m in store.modalities()
        }

        def mining_only():
            from mmgap_core.mining import mine_pseudo_positives

            row = {cid: i for i, cid in enumerate(corpus_ids)}
            for qids, _docs, emb in query_sets.values():
                exclude = np.asarray([row[c] for c in qids], dtype=np.int64)
                mine_pseudo_positives(emb, corpus, labels, exclude=exclude).pairs()

        runs = {
            "store": lambda: engine.calibrate(
                sample=args.sample, seed=args.seed, exact_max_items=0, progress=False
            ),
            "exact": lambda: engine.calibrate(sample=args.sample, seed=args.seed, progress=False),
            "exact mining only": mining_only,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for name, fn in runs.items():  # warm-up (HNSW load, BLAS threads)
                _log(f"warm-up {name}")
                fn()
            for r in range(args.repeats):
                order = list(runs) if r % 2 == 0 else list(runs)[::-1]
                for name in order:
                    t0 = time.perf_counter()
                    out = runs[name]()
                    times[name].append(time.perf_counter() - t0)
                    if out is not None:
                        fitted[name] = out
                    _log(f"  repeat {r + 1}/{args.repeats} {name}: {times[name][-1]:.2f} s")

        agreement = {}
        for qm, (qids, _docs, emb) in query_sets.items():
            s_ids, s_sc = store_picks(store, emb, qids)
            e_ids, e_sc = exact_picks(emb, corpus, labels, corpus_ids, qids)
            for m in e_ids:
                same = np.asarray([a == b for a, b in zip(s_ids[m], e_ids[m])])
                gap = np.asarray(e_sc[m]) - np.asarray(s_sc[m])
                agreement[f"{qm}->{m}"] = {
                    "queries": len(qids),
                    "same_id_share": float(same.mean()),
                    "mean_score_shortfall_when_different": float(gap[~same].mean())
                    if (~same).any()
                    else 0.0,
                    "max_score_shortfall": float(gap.max()),
                }
        stats = {}
        for key in fitted["exact"].keys_:
            name = f"{key[0]}->{key[1]}"
            e_mean, e_std = fitted["exact"].mean_[key], fitted["exact"].std_[key]
            s_mean, s_std = fitted["store"].mean_[key], fitted["store"].std_[key]
            stats[name] = {
                "exact_mean": e_mean,
                "exact_std": e_std,
                "store_mean": s_mean,
                "store_std": s_std,
                "mean_diff": s_mean - e_mean,
                "std_diff": s_std - e_std,
            }
        for m, ef in restore.items():
            col = client.get_collection(store.collection_name(m), embedding_function=None)
            col.modify(configuration={"hnsw": {"ef_search": ef}})
        client.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "n": args.n,
        "dim": args.dim,
        "data": args.data,
        "gap": args.gap,
        "queries_per_modality": args.sample,
        "repeats": args.repeats,
        "ef_search": args.ef_search,
        "cpu_count": os.cpu_count(),
        "build_s": build_s,
        "corpus_load_s": load_s,
        "times_s": times,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "agreement": agreement,
        "fitted": stats,
    }
    med = result["median_s"]
    ef = args.ef_search if args.ef_search is not None else "Chroma's default (100)"
    print(
        f"\ncalibration of N={args.n} items ({args.data} data), {args.sample} sampled queries per "
        f"modality (self-excluded), HNSW ef_search {ef}, median of {args.repeats}"
    )
    print(f"  {'path':40s} {'seconds':>9s}")
    print(f"  {'store: calibrate(exact_max_items=0)':40s} {med['store']:9.2f}")
    print(f"  {'exact: calibrate() (reads the corpus)':40s} {med['exact']:9.2f}")
    print(f"  {'exact mining only (corpus in memory)':40s} {med['exact mining only']:9.2f}")
    print(f"  (reading all {args.n} embeddings back from the store: {load_s:.2f} s)")
    print(f"\n  {'query->candidate':18s} {'same id':>8s} {'shortfall':>10s} {'max':>8s}")
    for key, a in agreement.items():
        print(
            f"  {key:18s} {a['same_id_share']:8.1%} {a['mean_score_shortfall_when_different']:10.4f} "
            f"{a['max_score_shortfall']:8.4f}"
        )
    print(
        f"\n  {'key':18s} {'exact mean':>10s} {'store mean':>10s} {'diff':>9s} "
        f"{'exact std':>9s} {'store std':>9s} {'diff':>9s}"
    )
    for key, st in stats.items():
        print(
            f"  {key:18s} {st['exact_mean']:10.5f} {st['store_mean']:10.5f} {st['mean_diff']:9.2e} "
            f"{st['exact_std']:9.5f} {st['store_std']:9.5f} {st['std_diff']:9.2e}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
