"""What each extra field of a Chroma query costs: could ``two-view-z`` do without the embeddings?

``two-view-z`` needs, per candidate, its dot products with its modality's mean and top principal
directions and its norm (``2 + D`` numbers, 7 for 512-d CLIP, 12 with both modalities' means and
directions): a search asks Chroma for the candidates' embeddings to compute them. The idea this
script measures: store those numbers with each item as metadata and ask for the metadata only.

One ``chromadb.PersistentClient`` in a temp folder (or ``--tmp``) holds N unit vectors three times:

* ``plain``: the metadata mmgap writes (``{"modality": "text"}``) and a document;
* ``packed``: the same plus one string field, 12 float64 values packed in base64 (128 characters);
* ``keys``: the same plus 12 float metadata keys.

Timed, alternating query by query (k results each): the fields ``ChromaStore`` asks for, the same
plus ``embeddings``, each metadata layout with the store's fields, and distances alone.

    python benchmarks/bench_fetch_fields.py                 # N=20000, 300 queries, k=10
    python benchmarks/bench_fetch_fields.py --n 50000 --k 50 --json fields.json
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from pathlib import Path

import numpy as np
from _common import VectorMaker, data_dir, log, summary, time_alternating

STORE_FIELDS = ["distances", "documents", "uris", "metadatas"]  # what ChromaStore.query asks for
N_EXTRA = 12  # both modalities' means and 5 directions each, for 512-d CLIP


def build(client, n: int, dim: int, batch: int = 2000) -> dict:
    """The three collections of ``n`` vectors; seconds each took to fill."""
    maker = VectorMaker(dim, "gap", 1.0, seed=0)
    extra = np.random.default_rng(1).standard_normal((n, N_EXTRA))
    layouts = {
        "plain": lambda i: {"modality": "text"},
        "packed": lambda i: {
            "modality": "text",
            "mmgap_view2": base64.b64encode(extra[i].tobytes()).decode("ascii"),
        },
        "keys": lambda i: {
            "modality": "text",
            **{f"mmgap_p{j}": float(extra[i, j]) for j in range(N_EXTRA)},
        },
    }
    cols, fill_s = {}, {}
    existing = {c.name for c in client.list_collections()}
    for name, meta in layouts.items():
        if f"fields-{name}" in existing:  # a kept --tmp folder: build afresh
            client.delete_collection(f"fields-{name}")
        col = client.create_collection(
            f"fields-{name}", metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            rows = range(start, min(start + batch, n))
            col.add(
                ids=[f"t{i}" for i in rows],
                embeddings=maker.make("text", len(rows), 0, start),
                metadatas=[meta(i) for i in rows],
                documents=[f"text number {i}" for i in rows],
            )
        fill_s[name] = time.perf_counter() - t0
        cols[name] = col
        log(f"  {name}: {n} items in {fill_s[name]:.1f} s")
    return {"collections": cols, "fill_s": fill_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="items per collection")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10, help="results per query")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--tmp", type=Path, default=None, help="work folder to keep")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    import chromadb

    with data_dir(args.tmp, "mmgap-fields-") as folder:
        client = chromadb.PersistentClient(path=str(folder / "db"))
        log(f"building 3 x {args.n} items in {folder}")
        cols = build(client, args.n, args.dim)["collections"]
        maker = VectorMaker(args.dim, "gap", 1.0, seed=0)
        queries = list(maker.make("text", args.queries + args.warmup, 1, 0))
        k = args.k

        def query(col, include):
            return lambda q: col.query(query_embeddings=[q], n_results=k, include=include)

        paths = {
            "store fields": query(cols["plain"], STORE_FIELDS),
            "store fields + embeddings": query(cols["plain"], [*STORE_FIELDS, "embeddings"]),
            "store fields, 1 packed string more": query(cols["packed"], STORE_FIELDS),
            f"store fields, {N_EXTRA} float keys more": query(cols["keys"], STORE_FIELDS),
            "distances only": query(cols["plain"], ["distances"]),
        }
        log(f"timing {args.queries} queries (warm-up {args.warmup}), k={k}")
        times = time_alternating(paths, queries, args.warmup)
        client.close()

    base = statistics.median(times["store fields"])
    print(f"\nChroma query latency, {args.n} items, k={k} (ms)")
    print(f"  {'fields':40s} {'median':>8s} {'p10':>8s} {'p90':>8s} {'vs store':>9s}")
    results = {}
    for name, ms in times.items():
        s = summary(ms)
        results[name] = s
        print(
            f"  {name:40s} {s['median_ms']:8.3f} {s['p10_ms']:8.3f} {s['p90_ms']:8.3f}"
            f" {s['median_ms'] - base:+9.3f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"tmp": None, "json": None}, "results": results}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
