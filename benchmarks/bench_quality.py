"""Ranking quality of every fusion method on real CLIP embeddings and on every simulator profile.

Data:

* ``coco-t2i`` / ``coco-i2t``: OpenAI CLIP ViT-B/16 on 500 MS-COCO image-caption pairs
  (``benchmarks/data/real-embeddings``, MIT). t2i: the queries are the captions of the even pairs;
  the corpus is all 500 images plus the captions of the odd pairs (distractors); the relevant item
  is the query's own image. i2t: the same with the sides swapped.
* every simulator profile, at its own seed and at ``--seeds - 1`` other seeds.

Every method runs through ``evaluate_embeddings`` (the code behind ``mmgap eval``), transductive
calibration, ``--pool`` candidates per modality. The table gives R@1, R@10 and nDCG@10 for queries
whose relevant item is in the other modality (cross) and in the query's own (same). The last lines
check the default method against the bound of issue 9: on every set, its cross-modal R@10 and
nDCG@10 are at least the best baseline's minus 0.01, and so are its same-modal ones (``raw`` left
out).

Run from the repository root::

    .venv/bin/python benchmarks/bench_quality.py [--seeds 3] [--pool 50] [--json OUT.json]
    .venv/bin/python benchmarks/bench_quality.py --sensitivity   # the default at pool 10..200
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgap_core.evaluation import evaluate_embeddings  # noqa: E402
from mmgap_core.fusion import DEFAULT_METHOD, METHOD_NAMES, parse_methods  # noqa: E402
from mmgap_core.jsonio import write_json  # noqa: E402
from mmgap_core.simulator import PROFILES, simulate  # noqa: E402

COCO = Path(__file__).resolve().parent / "data" / "real-embeddings" / "clip_vitb16_coco500.npy"
BASELINES = ("raw", "standardize", "zscore-per-query", "minmax", "rrf", "center")
METRICS = ("recall@1", "recall@10", "ndcg@10")
#: Methods checked against the bound by default: the default and the score-only one before it.
CHECKED = tuple(dict.fromkeys([DEFAULT_METHOD, "background-z"]))
SEED_STEP = 7919  # other seeds of a profile: its own seed plus multiples of a prime


@dataclasses.dataclass
class EvalSet:
    """One retrieval set: query and corpus embeddings, corpus labels, one relevant row per query."""

    name: str
    queries: np.ndarray
    query_modality: str
    corpus: np.ndarray
    labels: np.ndarray
    relevant: np.ndarray

    @property
    def qrels(self) -> np.ndarray:
        n = self.queries.shape[0]
        return np.stack([np.arange(n), self.relevant, np.ones(n, dtype=np.int64)], axis=1)


def coco_sets(path: Path = COCO) -> list[EvalSet]:
    """The t2i and i2t sets of issue 9, built from the COCO CLIP array ``[2, 500, 512]``."""
    arr = np.load(path)
    images, captions = arr[0], arr[1]
    n = images.shape[0]
    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    t2i = EvalSet(
        "coco-t2i",
        captions[even],
        "text",
        np.concatenate([images, captions[odd]]),
        np.array(["image"] * n + ["text"] * odd.size),
        even.copy(),
    )
    i2t = EvalSet(
        "coco-i2t",
        images[even],
        "image",
        np.concatenate([captions, images[odd]]),
        np.array(["text"] * n + ["image"] * odd.size),
        even.copy(),
    )
    return [t2i, i2t]


def simulator_sets(profiles, seeds: int, first: int = 0) -> list[EvalSet]:
    """Each profile at ``seeds`` seeds: its own seed plus ``SEED_STEP * i``, ``i = first, ...``.

    ``first > 0`` gives seeds no method was designed on (``--first-seed 3``: held out).
    """
    out = []
    for name in profiles:
        for i in range(first, first + seeds):
            p = PROFILES[name]
            p = p if i == 0 else dataclasses.replace(p, seed=p.seed + SEED_STEP * i)
            d = simulate(p)
            label = name if i == 0 else f"{name}@seed+{i}"
            out.append(
                EvalSet(label, d.queries, d.query_modality, d.corpus, d.modalities, d.relevant_rows)
            )
    return out


def capped_pool(labels: np.ndarray, pool: int) -> int:
    """``pool`` candidates per modality, at most the smallest modality's number of items."""
    return min(pool, int(np.unique(labels, return_counts=True)[1].min()))


def evaluate_set(s: EvalSet, methods, pool: int) -> dict:
    """``{method: {"cross"|"same": {metric: value}}}`` for one set."""
    report = evaluate_embeddings(
        s.queries,
        s.corpus,
        s.labels,
        s.qrels,
        query_modality=s.query_modality,
        methods=list(methods),
        ks=(1, 10),
        pool=capped_pool(s.labels, pool),
    )
    out: dict = {
        m: by_part([r for r in report.results if r["method"] == m], s.query_modality)
        for m in methods
    }
    targets = s.labels[s.relevant]
    n_same = int((targets == s.query_modality).sum())
    out["_n"] = {"cross": int(targets.size - n_same), "same": n_same}
    return out


def by_part(rows, query_modality: str) -> dict:
    """``{"cross"|"same": {metric: value}}`` from one method's result rows."""
    out: dict = {"cross": {}, "same": {}}
    for row in rows:
        if row["subset"] in ("all", "mixed") or row["metric"] not in METRICS:
            continue
        out["same" if row["subset"] == query_modality else "cross"][row["metric"]] = row["value"]
    return out


def bound_checks(res: dict) -> int:
    """How many bound checks a set has: R@10 and nDCG@10 for each part with queries."""
    return 2 * sum(1 for part in ("cross", "same") if res["_n"][part])


def bound_failures(name: str, res: dict, method: str) -> list[str]:
    """Where ``method`` misses the issue-9 bound on one set."""
    fails = []
    for part, baselines in (("cross", BASELINES), ("same", [b for b in BASELINES if b != "raw"])):
        if not res["_n"][part]:
            continue
        for metric in ("recall@10", "ndcg@10"):
            best_name = max(baselines, key=lambda b: res[b][part].get(metric, -1.0))
            best = res[best_name][part][metric]
            value = res[method][part][metric]
            if value < best - 0.01:
                fails.append(
                    f"{name}: {part}-modal {metric} {value:.3f} < {best_name} {best:.3f} - 0.01"
                )
    return fails


def format_table(name: str, res: dict, methods, default: str) -> str:
    head = (
        f"== {name}  (cross-modal queries: {res['_n']['cross']}, same-modal: {res['_n']['same']})"
    )
    cols = "".join(
        f"{p + ' ' + m.replace('recall', 'R'):>15}" for p in ("cross", "same") for m in METRICS
    )
    lines = [head, f"  {'method':<22}{cols}"]
    for m in methods:
        cells = ""
        for part in ("cross", "same"):
            for metric in METRICS:
                v = res[m][part].get(metric)
                cells += f"{'-' if v is None or v != v else f'{v:.3f}':>15}"
        mark = " *" if m == default else ""
        lines.append(f"  {m + mark:<22}{cells}")
    return "\n".join(lines)


def sensitivity_table(by_pool: dict, names: list[str], method: str = DEFAULT_METHOD) -> str:
    """``method``'s cross / same R@10 on each set at each pool size."""
    pools = list(by_pool)
    head = f"{'set':<34}" + "".join(f"{'k=' + str(p):>14}" for p in pools)
    lines = [f"\n{method}: R@10 cross / same by k_per_modality", head]
    for name in names:
        cells = ""
        for p in pools:
            r = by_pool[p]["results"][name][method]
            c = r["cross"].get("recall@10")
            sm = r["same"].get("recall@10")
            cell = f"{c:.2f}/" + ("-" if sm is None or sm != sm else f"{sm:.2f}")
            cells += f"{cell:>14}"
        lines.append(f"{name:<34}{cells}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="simulator seeds per profile")
    ap.add_argument("--pool", type=int, default=50, help="candidates per modality (k_per_modality)")
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="start at this seed offset (3: seeds the methods were not designed on)",
    )
    ap.add_argument("--profiles", default="all", help="comma-separated simulator profiles, or all")
    ap.add_argument("--no-coco", action="store_true", help="leave out the two COCO sets")
    ap.add_argument(
        "--sensitivity",
        action="store_true",
        help="rerun the bound check at pool 10, 20, 50, 100 and 200",
    )
    ap.add_argument(
        "--check",
        default=",".join(CHECKED),
        help=f"comma-separated methods checked against the bound (default: {','.join(CHECKED)})",
    )
    ap.add_argument("--json", metavar="OUT.json", help="also write every number as JSON")
    args = ap.parse_args(argv)
    checked = parse_methods(args.check)

    profiles = list(PROFILES) if args.profiles == "all" else args.profiles.split(",")
    sets = ([] if args.no_coco else coco_sets()) + simulator_sets(
        profiles, args.seeds, args.first_seed
    )
    methods = [m for m in METHOD_NAMES if m != "standardize-gold"] + ["standardize-gold"]
    pools = (10, 20, 50, 100, 200) if args.sensitivity else (args.pool,)
    out: dict = {"default_method": DEFAULT_METHOD, "checked": checked, "pools": {}}
    for pool in pools:
        t0 = time.perf_counter()
        results, checks = {}, 0
        fails: dict[str, list[str]] = {m: [] for m in checked}
        for s in sets:
            res = evaluate_set(s, methods, pool)
            results[s.name] = res
            for m in checked:
                fails[m] += bound_failures(s.name, res, m)
            checks += bound_checks(res)
            if not args.sensitivity:
                print(format_table(s.name, res, methods, DEFAULT_METHOD))
        out["pools"][pool] = {"results": results, "bound_failures": fails}
        took = time.perf_counter() - t0
        for m in checked:
            role = "default method" if m == DEFAULT_METHOD else "method"
            mark = " (marked *)" if m == DEFAULT_METHOD else ""
            print(
                f"\npool {pool}: {role} {m!r}{mark} misses the bound in "
                f"{len(fails[m])} of {checks} checks ({took:.0f} s)"
            )
            for f in fails[m]:
                print(f"  {f}")
    if args.sensitivity:
        for m in checked:
            print(sensitivity_table(out["pools"], [s.name for s in sets], m))
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
