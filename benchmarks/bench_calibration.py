"""Calibration at scale: streamed exact mining against the store's approximate (HNSW) index.

One mmgap store of N synthetic 512-d items (half text, half image, ``bench_search.VectorMaker``),
added through the Python API with explicit embeddings, in an embedded ``chromadb.PersistentClient``.
Calibration samples ``--sample`` items of each modality from the store (self-excluded). Each path
runs in a fresh subprocess, ``--repeats`` times, and reports wall time and peak extra memory (the
process's peak RSS during the run, from ``VmHWM`` reset just before it, minus its RSS then: numpy,
BLAS, chromadb's Rust side and HNSW index loads included):

* ``exact``: ``engine.calibrate()``, the default: the store's embeddings streamed in chunks, exact
  top-50 per (query, modality) merged chunk by chunk, modality means in the same pass (256 MiB
  budget);
* ``store-index``: ``engine.calibrate(mining="store-index")``: batched ``query_per_modality``
  through HNSW, plus the agreement check the engine runs (100 queries per modality mined exactly:
  one more streamed pass, which also gives exact means);
* ``store-index, no check``: ``fit_calibration(mining="store-index", agreement_sample=0)``, the
  HNSW cost alone (means from a 20k sample);
* ``read only``: one pass of ``store.iter_embeddings`` (the floor of streamed exact mining);
* ``in memory`` (``--in-memory``): what exact calibration did before: every embedding read into
  one array, then ``topk_per_modality``.

Agreement (``measure_agreement`` over all sampled queries): the share of (query, candidate
modality) pairs for which the store index picks the exact top-1 (same id, or a tie within 1e-5),
next to the engine's estimate from its 100-query check, and the difference of the fitted means.

    python benchmarks/bench_calibration.py --n 20000                        # temp store
    python benchmarks/bench_calibration.py --build-ladder 50000,100000,200000,500000 --db DIR
    python benchmarks/bench_calibration.py --ladder 50000,100000,200000,500000 --db DIR --in-memory

``--build-ladder`` grows one store and copies it to ``DIR/n<N>`` at each size (each copy is what
``--n N --db DIR/n<N>`` builds and reuses); ``--ladder`` benchmarks those copies.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import STORE_NAME, VectorMaker, build_or_reuse  # noqa: E402

PATHS = ["exact", "store-index", "store-index, no check", "read only", "in memory"]
MiB = 2**20


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _params(maker: VectorMaker, n: int) -> dict:
    return {
        "n": n,
        "dim": maker.dim,
        "data": maker.data,
        "gap": maker.gap,
        "seed": maker.seed,
        "generator": 2,
    }


def build_ladder(root: Path, sizes: list[int], maker: VectorMaker, batch: int) -> None:
    """Grow one store through ``sizes`` and copy it to ``root/n<N>`` at each size.

    Each copy holds exactly what ``build_or_reuse(n=N)`` builds (same ids, same batch-aligned
    vectors, same recorded parameters), so ``--n N --db root/n<N>`` reuses it. Sizes whose copy
    already exists are skipped; a stopped build resumes.
    """
    import chromadb

    from mmgap_core.store.chroma import ChromaStore

    grow = root / "grow"
    grow.mkdir(parents=True, exist_ok=True)
    for n in sorted(sizes):
        dest = root / f"n{n}"
        if dest.exists():
            _log(f"{dest} exists: skipped")
            continue
        client = chromadb.PersistentClient(path=str(grow))
        store = ChromaStore(client, STORE_NAME, modalities=["text", "image"])
        store.update_manifest(bench_params=_params(maker, n))
        t0 = time.perf_counter()
        build_or_reuse(client, maker, n, batch, raw_copy=False)
        client.close()
        del store, client
        _log(f"grown to {n} in {time.perf_counter() - t0:.1f} s; copying to {dest}")
        shutil.copytree(grow, dest)
        (dest / "build_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")


# ------------------------------------------------------------------------------ one measured run
def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def worker(path: str, db: Path, sample: int, seed: int) -> dict:
    """Run one path once in this (fresh) process; time and peak extra RSS."""
    import warnings

    import chromadb

    from mmgap_core.calibration.fitting import fit_calibration, load_corpus, sample_query_sets
    from mmgap_core.calibration.streaming import StreamPlan
    from mmgap_core.engine import RetrievalEngine
    from mmgap_core.mining import topk_per_modality
    from mmgap_core.store.chroma import ChromaStore

    warnings.simplefilter("ignore", UserWarning)
    client = chromadb.PersistentClient(path=str(db))
    store = ChromaStore(client, STORE_NAME)
    engine = RetrievalEngine(store)
    counts = store.counts()
    sets = sample_query_sets(store, counts, sample, seed=seed)
    out: dict = {}

    def run():
        if path == "exact":
            engine.calibrate(sample=sample, seed=seed, progress=False)
            return engine.calibration_data()
        if path == "store-index":
            engine.calibrate(sample=sample, seed=seed, mining="store-index", progress=False)
            return engine.calibration_data()
        if path == "store-index, no check":
            rec = fit_calibration(
                store, sets, counts=counts, model_id=engine.model_id, dim=engine.dim,
                mining="store-index", agreement_sample=0,
            )  # fmt: skip
            return rec.to_dict()
        if path == "read only":
            rows = StreamPlan.for_budget(2 * sample, store.dim, 50, 2, 256 * MiB).chunk_rows
            for m in store.modalities():
                for _ids, _emb in store.iter_embeddings(m, rows):
                    pass
            return None
        if path == "in memory":
            corpus = load_corpus(store)
            for qs in sets.values():
                ex = corpus.rows_of(qs.self_ids)
                topk_per_modality(qs.embeddings, corpus.vectors, corpus.labels, 50, exclude=ex)
            return None
        raise SystemExit(f"unknown path {path!r}")

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    data = run()
    out["seconds"] = time.perf_counter() - t0
    out["peak_extra_mib"] = (_rss_kib("VmHWM") - before) / 1024
    if data is not None:
        std = data["standardizer"]["stats"]
        out["fitted"] = {
            f"{r['query_modality']}->{r['candidate_modality']}": [r["mean"], r.get("std")]
            for r in std
        }
        out["mining"], out["mining_agreement"] = data["mining"], data.get("mining_agreement")
    client.close()
    return out


def full_agreement(db: Path, sample: int, seed: int) -> dict:
    """Store-index top-1 against exact top-1 for every sampled query (one streamed exact pass)."""
    import chromadb

    from mmgap_core.calibration.fitting import measure_agreement, sample_query_sets
    from mmgap_core.store.chroma import ChromaStore

    client = chromadb.PersistentClient(path=str(db))
    store = ChromaStore(client, STORE_NAME)
    counts = store.counts()
    sets = sample_query_sets(store, counts, sample, seed=seed)
    agreement, _means = measure_agreement(store, sets, counts, sample=sample, seed=seed)
    client.close()
    return agreement


def _spawn(args: list[str]) -> dict:
    env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_one(db: Path, n: int, args) -> dict:
    """Every path ``args.repeats`` times (alternating order) and the full agreement, at one N."""
    paths = [p for p in PATHS if p != "in memory" or args.in_memory]
    runs: dict[str, list[dict]] = {p: [] for p in paths}
    for r in range(args.repeats):
        for p in paths if r % 2 == 0 else paths[::-1]:
            res = _spawn(["--worker", p, "--db", str(db), "--sample", str(args.sample)])
            runs[p].append(res)
            _log(f"  N={n} {p}: {res['seconds']:.1f} s, +{res['peak_extra_mib']:.0f} MiB")
    agreement = _spawn(["--agreement", "--db", str(db), "--sample", str(args.sample)])
    med = {
        p: {
            "seconds": statistics.median(x["seconds"] for x in v),
            "peak_extra_mib": max(x["peak_extra_mib"] for x in v),
        }
        for p, v in runs.items()
    }
    fitted = {p: runs[p][-1].get("fitted") for p in ("exact", "store-index")}
    return {
        "n": n,
        "median": med,
        "runs": runs,
        "agreement_all_queries": agreement,
        "agreement_engine_check": runs["store-index"][-1]["mining_agreement"],
        "mean_diff_store_minus_exact": {
            k: fitted["store-index"][k][0] - fitted["exact"][k][0] for k in fitted["exact"]
        },
    }


def print_tables(results: list[dict], sample: int) -> None:
    print(f"\ncalibration, {sample} sampled queries per modality (self-excluded), 512-d gap data")
    print(f"  time s (peak extra MiB): {' | '.join(PATHS)}")
    for r in results:
        cells = [
            f"{r['median'][p]['seconds']:.1f} ({r['median'][p]['peak_extra_mib']:.0f})"
            if p in r["median"]
            else "-"
            for p in PATHS
        ]
        print(f"  N={r['n']:>7}: " + " | ".join(cells))
    print("\n  store-index top-1 agreement, all queries (engine's 100-query estimate):")
    for r in results:
        est = (r["agreement_engine_check"] or {}).get("top1", {})
        cells = [
            f"{k} {a:.1%} ({est.get(k, float('nan')):.0%})"
            for k, a in r["agreement_all_queries"]["top1"].items()
        ]
        print(f"  N={r['n']:>7}: " + ", ".join(cells))
    print("\n  fitted mean, store-index minus exact:")
    for r in results:
        diffs = ", ".join(f"{k} {v:+.4f}" for k, v in r["mean_diff_store_minus_exact"].items())
        print(f"  N={r['n']:>7}: {diffs}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20_000, help="total items (half text, half image)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--data", choices=["gap", "random"], default="gap")
    ap.add_argument("--gap", type=float, default=1.0)
    ap.add_argument("--sample", type=int, default=1000, help="calibration queries per modality")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch", type=int, default=5000, help="add batch size (capped by Chroma)")
    ap.add_argument("--db", type=Path, default=None, help="data directory to keep and reuse")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--in-memory", action="store_true", help="also time the old in-memory path")
    ap.add_argument("--build-ladder", default=None, help="comma-separated sizes: build only")
    ap.add_argument("--ladder", default=None, help="comma-separated sizes: bench DB/n<N> each")
    ap.add_argument("--json", metavar="OUT", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--agreement", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if args.worker or args.agreement:
        res = (
            worker(args.worker, args.db, args.sample, args.seed)
            if args.worker
            else full_agreement(args.db, args.sample, args.seed)
        )
        print(json.dumps(res))
        return 0
    maker = VectorMaker(args.dim, args.data, args.gap, args.seed)
    if args.build_ladder:
        if args.db is None:
            ap.error("--build-ladder needs --db")
        sizes = [int(x) for x in args.build_ladder.split(",")]
        build_ladder(args.db, sizes, maker, args.batch)
        return 0
    if args.n < 4 or args.sample < 2 or args.repeats < 1:
        ap.error("need --n >= 4, --sample >= 2, --repeats >= 1")
    import chromadb

    tmp = Path(tempfile.mkdtemp(prefix="mmgap-bench-cal-")) if args.db is None else None
    try:
        if args.ladder:
            if args.db is None:
                ap.error("--ladder needs --db (built by --build-ladder)")
            todo = [(int(x), args.db / f"n{int(x)}") for x in args.ladder.split(",")]
        else:
            db = args.db if tmp is None else tmp / "db"
            db.mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(db))
            _log(f"building/reusing {args.n} items in {db}")
            build_or_reuse(client, maker, args.n, args.batch, raw_copy=False)
            client.close()
            todo = [(args.n, db)]
        results = [bench_one(db, n, args) for n, db in todo]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print_tables(results, args.sample)
    if args.json:
        meta = {"cpu_count": os.cpu_count(), "sample": args.sample, "repeats": args.repeats}
        args.json.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
