"""Benchmark pseudo-positive mining against a bare ``Q @ C.T`` matmul of the same shapes.

Goals: mining time <= 1.3x the matmul, and peak *extra* memory of mining <= 256 MiB whatever Q and N
(the full Q x N score matrix is never built). Extra memory is measured with ``tracemalloc`` (numpy
reports its allocations to it) around the mining call only; the inputs are allocated before tracing
starts. The Q x M x k result is reported separately.

The vectors come from the benchmarks' shared ``VectorMaker`` (``_common.py``): isotropic unit
rows by default, ``--data gap`` for CLIP-like modality cones.

    python benchmarks/bench_mining.py                     # Q=4000 N=100000 d=512, contiguous layout
    python benchmarks/bench_mining.py --layout interleaved --k 5 --json
    python benchmarks/bench_mining.py --data gap --queries 1000
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc

import numpy as np
from _common import VectorMaker

from mmgap_core.mining import DEFAULT_BLOCK_BYTES, mine_pseudo_positives

MiB = 2**20


def make_inputs(n_q: int, n_c: int, d: int, layout: str, seed: int, data: str = "random"):
    """Unit-norm float32 text queries and candidates; half text, half image.

    The candidates' modalities are contiguous (all text, then all image) or alternating.
    """
    maker = VectorMaker(d, data, 1.0, seed)
    queries = maker.make("text", n_q, 1, 0)
    if layout == "contiguous":
        labels = np.where(np.arange(n_c) < n_c // 2, "text", "image")
    else:
        labels = np.where(np.arange(n_c) % 2 == 0, "text", "image")
    candidates = np.empty((n_c, d), dtype=np.float32)
    for m in ("text", "image"):
        rows = labels == m
        candidates[rows] = maker.make(m, int(rows.sum()), 0, 0)
    return queries, candidates, labels


def interleaved_timings(fns: dict, repeats: int) -> dict[str, dict[str, float]]:
    """Best/median wall and process-CPU seconds per function, alternating the functions so that
    both see the same machine load (CPU time is the steadier number on a shared machine)."""
    for fn in fns.values():
        fn()  # warm up: BLAS threads, page faults of the buffers
        gc.collect()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            out = fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            del out
            gc.collect()
    return {
        name: {
            "best_s": min(wall[name]),
            "median_s": statistics.median(wall[name]),
            "cpu_best_s": min(cpu[name]),
            "cpu_median_s": statistics.median(cpu[name]),
        }
        for name in fns
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queries", "-Q", type=int, default=4000)
    ap.add_argument("--candidates", "-N", type=int, default=100_000)
    ap.add_argument("--dim", "-d", type=int, default=512)
    ap.add_argument("--k", type=int, default=1, help="pseudo-positives per modality (top_k)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layout", choices=["contiguous", "interleaved"], default="contiguous")
    ap.add_argument("--data", choices=["random", "gap"], default="random", help="see VectorMaker")
    ap.add_argument(
        "--exclude", action="store_true", help="self-exclusion: query i is corpus row i"
    )
    ap.add_argument("--max-block-bytes", type=int, default=DEFAULT_BLOCK_BYTES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)

    q, c, labels = make_inputs(
        args.queries, args.candidates, args.dim, args.layout, args.seed, args.data
    )
    exclude = None
    if args.exclude:
        exclude = np.arange(args.queries) % args.candidates

    def mine():
        return mine_pseudo_positives(
            q,
            c,
            labels,
            top_k=args.k,
            exclude=exclude,
            max_block_bytes=args.max_block_bytes,
        )

    def matmul():
        return q @ c.T

    timings = interleaved_timings({"matmul": matmul, "mining": mine}, args.repeats)
    mat, mining = timings["matmul"], timings["mining"]
    mat_best, mat_med = mat["best_s"], mat["median_s"]
    mine_best, mine_med = mining["best_s"], mining["median_s"]

    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    res = mine()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result_bytes = res.indices.nbytes + res.scores.nbytes
    extra = peak - base

    row = {
        "Q": args.queries,
        "N": args.candidates,
        "d": args.dim,
        "k": args.k,
        "layout": args.layout,
        "exclude": args.exclude,
        "max_block_bytes": args.max_block_bytes,
        "mining_best_s": mine_best,
        "mining_median_s": mine_med,
        "matmul_best_s": mat_best,
        "matmul_median_s": mat_med,
        "ratio_best": mine_best / mat_best,
        "ratio_median": mine_med / mat_med,
        "mining_cpu_best_s": mining["cpu_best_s"],
        "matmul_cpu_best_s": mat["cpu_best_s"],
        "ratio_cpu_best": mining["cpu_best_s"] / mat["cpu_best_s"],
        "ratio_cpu_median": mining["cpu_median_s"] / mat["cpu_median_s"],
        "peak_extra_mib": extra / MiB,
        "result_mib": result_bytes / MiB,
        "matmul_output_mib": args.queries * args.candidates * 4 / MiB,
        "ratio_goal_met": mine_best / mat_best <= 1.3,
        "memory_goal_met": extra <= 256 * MiB,
    }
    if args.json:
        print(json.dumps(row))
        return 0
    print(
        f"Q={args.queries} N={args.candidates} d={args.dim} k={args.k} layout={args.layout} "
        f"exclude={args.exclude} max_block_bytes={args.max_block_bytes / MiB:.0f} MiB"
    )
    print(f"{'':22}{'best':>10}{'median':>10}")
    print(f"{'mining (s)':22}{mine_best:10.3f}{mine_med:10.3f}")
    print(f"{'bare Q @ C.T (s)':22}{mat_best:10.3f}{mat_med:10.3f}")
    print(f"{'ratio (goal <= 1.3)':22}{row['ratio_best']:10.2f}{row['ratio_median']:10.2f}")
    print(f"{'ratio of CPU time':22}{row['ratio_cpu_best']:10.2f}{row['ratio_cpu_median']:10.2f}")
    print(f"{'peak extra memory':22}{row['peak_extra_mib']:9.1f}M  (goal <= 256 MiB; incl. result)")
    print(f"{'result Q x M x k':22}{row['result_mib']:9.2f}M")
    print(
        f"{'Q x N score matrix':22}{row['matmul_output_mib']:9.1f}M  (what a bare matmul allocates)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
