"""The same-modal trade-off: does a constant favouring the query's own modality meet both bounds?

``background-z`` (the score-only method that was the default before ``two-view-z``) misses the
issue-9 bound only on same-modal queries, against ``center`` (``bench_quality.py``). This script
studies it: it adds a constant ``b`` to its scores of every
candidate in the query's own modality (``b > 0`` favours same-modal items) and reruns the bound
check of ``bench_quality.py`` for each ``b``, on the same sets (the two COCO sets and every
simulator profile at ``--seeds`` seeds) and against the same baselines: how many cross-modal and
same-modal checks it misses, and a per-set table of cross / same R@10 of the shifted default next
to the best baseline's.

The shifted default is fitted as ``evaluate_embeddings`` fits it (transductive calibration on
each set's own queries, ``--pool`` candidates per modality), then its per-modality scores are
shifted and merged with ``merge_scored``. Self-check: at ``b = 0`` every number must equal
``bench_quality.py``'s ``background-z`` to 1e-9, or the script stops.

A last table splits ``center``'s same-modal R@10 by what a method that keeps each modality's
cosine order (every score-only method) can reach at all (:func:`order_reach`).

Run from the repository root::

    .venv/bin/python benchmarks/bench_tradeoff.py [--shifts=-0.1,0,0.1,0.2,0.3,0.5] [--seeds 3]
        [--pool 50] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_quality import (  # noqa: E402
    BASELINES,
    EvalSet,
    bound_checks,
    bound_failures,
    by_part,
    capped_pool,
    coco_sets,
    evaluate_set,
    simulator_sets,
)
from mmgap_core.candidates import CandidateBatch  # noqa: E402
from mmgap_core.evaluation_calibration import fit_methods  # noqa: E402
from mmgap_core.fusion import DEFAULT_METHOD, FusionMethod  # noqa: E402
from mmgap_core.jsonio import write_json  # noqa: E402
from mmgap_core.metrics import Qrels, evaluate_ranking  # noqa: E402
from mmgap_core.mining import ModalityTopK, topk_per_modality  # noqa: E402
from mmgap_core.simulator import PROFILES  # noqa: E402

#: The score-only method this script shifts (the default before ``two-view-z``).
SHIFTED_BASE = "background-z"
SHIFTED = "shifted-default"


class OwnModalityShift(FusionMethod):
    """A fitted fusion method with ``shift`` added to the scores of the query's own modality."""

    def __init__(self, inner: FusionMethod, shift: float):
        self.inner, self.shift = inner, float(shift)
        self.name = f"{inner.name}{shift:+g}"

    def score(self, batch):
        out = dict(self.inner.score(batch))
        if batch.query_modality in out:
            out[batch.query_modality] = out[batch.query_modality] + self.shift
        return out


def fit_default(
    s: EvalSet, pool: int, methods=(SHIFTED_BASE,)
) -> tuple[dict[str, FusionMethod], CandidateBatch, ModalityTopK]:
    """``methods`` fitted as ``evaluate_candidates`` fits them, the candidates and their lists.

    The pool is capped at the smallest modality's size, as in ``evaluate_set``.
    """
    retrieved = topk_per_modality(s.queries, s.corpus, s.labels, capped_pool(s.labels, pool))
    qrels = Qrels(s.qrels, s.queries.shape[0])
    fusers, _ = fit_methods(
        retrieved,
        s.queries,
        s.corpus,
        s.labels,
        qrels,
        list(methods),
        query_modality=s.query_modality,
    )
    batch = CandidateBatch.from_topk(
        retrieved, s.query_modality, query_embeddings=s.queries, corpus=s.corpus
    )
    return fusers, batch, retrieved


def order_reach(s: EvalSet, fusers: dict, batch: CandidateBatch, retrieved: ModalityTopK):
    """Same-modal R@10 split by what a method that keeps each modality's cosine order can reach.

    Every score-only method (``background-z``, ``standardize``, ``zscore-per-query``, ``minmax``,
    ``rrf``) keeps each modality's cosine order, so it cannot rank a same-modal relevant item
    higher than its rank among its own modality's cosines. ``center`` re-scores candidates with
    their embeddings and can. ``None`` for a set without same-modal queries.

    Returns
    -------
    dict or None
        ``ceiling``: share of same-modal queries whose relevant item is in its own modality's
        cosine top 10 (the most an order-keeping method can reach); ``center``: center's R@10;
        ``center_beyond``: share center gets in its top 10 from beyond that cosine top 10;
        ``center_within``: ``center - center_beyond``; ``background_z``: its R@10.
    """
    same = s.labels[s.relevant] == s.query_modality
    if not same.any():
        return None
    rel = s.relevant[same, None]
    own, _ = retrieved.of(s.query_modality)
    within = (own[same, :10] == rel).any(axis=1)
    top10 = {
        name: (fusers[name].fuse(batch, 10).ids[same] == rel).any(axis=1)
        for name in (SHIFTED_BASE, "center")
    }
    return {
        "ceiling": float(within.mean()),
        "center": float(top10["center"].mean()),
        "center_beyond": float((top10["center"] & ~within).mean()),
        "center_within": float((top10["center"] & within).mean()),
        "background_z": float(top10[SHIFTED_BASE].mean()),
    }


def reach_table(reach: dict) -> str:
    """One line per set with same-modal queries (see :func:`order_reach`)."""
    lines = [
        "\nSame-modal R@10: what keeping each modality's cosine order allows (see order_reach)",
        f"  {'set':<32}{'ceiling':>9}{'center':>8}{'beyond':>8}{'within':>8}"
        f"{SHIFTED_BASE:>14}{'vs center':>11}{'vs within':>11}",
    ]
    for name, r in reach.items():
        if r is None:
            continue
        ok_all = "met" if r["background_z"] >= r["center"] - 0.01 else "missed"
        ok_within = "met" if r["background_z"] >= r["center_within"] - 0.01 else "missed"
        lines.append(
            f"  {name:<32}{r['ceiling']:>9.3f}{r['center']:>8.3f}{r['center_beyond']:>8.3f}"
            f"{r['center_within']:>8.3f}{r['background_z']:>14.3f}{ok_all:>11}{ok_within:>11}"
        )
    return "\n".join(lines)


def score_parts(s: EvalSet, fuser: FusionMethod, batch: CandidateBatch) -> dict:
    """``{"cross"|"same": {metric: value}}`` of one method, as ``evaluate_set`` reports them."""
    fused = fuser.fuse(batch, 10)
    rows = evaluate_ranking(
        fused.ids, fused.modality_labels(), Qrels(s.qrels, s.queries.shape[0]), s.labels, (1, 10)
    )
    return by_part(rows, s.query_modality)


def self_check(name: str, mine: dict, ref: dict) -> None:
    """Stop unless the unshifted default reproduces ``bench_quality``'s numbers exactly."""
    for part in ("cross", "same"):
        if mine[part].keys() != ref[part].keys():
            raise SystemExit(f"self-check: {name} {part}: metrics {mine[part]} vs {ref[part]}")
        for metric, value in ref[part].items():
            if not abs(mine[part][metric] - value) <= 1e-9:
                raise SystemExit(f"self-check: {name} {part} {metric} {mine[part][metric]} {value}")


def only(res: dict, part: str) -> dict:
    """``res`` with the other part's queries hidden, so the bound functions check ``part`` alone."""
    return {**res, "_n": {p: res["_n"][p] if p == part else 0 for p in ("cross", "same")}}


def best_r10(res: dict, part: str) -> float | None:
    names = BASELINES if part == "cross" else [b for b in BASELINES if b != "raw"]
    values = [res[b][part].get("recall@10") for b in names]
    return max(values) if res["_n"][part] else None


def cell(cross, same, mark: str = "") -> str:
    return f"{cross:.2f}/" + ("-" if same is None else f"{same:.2f}") + (f" {mark}" if mark else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shifts", default="-0.1,0,0.1,0.2,0.3,0.5", help="comma-separated b values")
    ap.add_argument("--seeds", type=int, default=3, help="simulator seeds per profile")
    ap.add_argument("--pool", type=int, default=50, help="candidates per modality (k_per_modality)")
    ap.add_argument("--json", metavar="OUT.json", help="also write every number as JSON")
    args = ap.parse_args(argv)
    shifts = [float(b) for b in args.shifts.split(",") if b.strip()]

    t0 = time.perf_counter()
    sets = coco_sets() + simulator_sets(list(PROFILES), args.seeds)
    base, shifted, reach = {}, {b: {} for b in shifts}, {}
    for s in sets:
        base[s.name] = evaluate_set(s, [*BASELINES, SHIFTED_BASE], args.pool)
        fusers, batch, retrieved = fit_default(s, args.pool, (SHIFTED_BASE, "center"))
        method = fusers[SHIFTED_BASE]
        self_check(
            s.name,
            score_parts(s, OwnModalityShift(method, 0.0), batch),
            base[s.name][SHIFTED_BASE],
        )
        reach[s.name] = order_reach(s, fusers, batch, retrieved)
        for name in ("center", SHIFTED_BASE):  # order_reach counts hits as the harness does
            key = "background_z" if name == SHIFTED_BASE else name
            ref = base[s.name][name]["same"].get("recall@10")
            if reach[s.name] is not None and abs(reach[s.name][key] - ref) > 1e-9:
                raise SystemExit(
                    f"self-check: {s.name} {name} same R@10 {reach[s.name][key]} {ref}"
                )
        for b in shifts:
            shifted[b][s.name] = score_parts(s, OwnModalityShift(method, b), batch)
    print(
        f"self-check: at b=0 the shifted default matched bench_quality's {SHIFTED_BASE!r} on "
        f"all {len(sets)} sets (every metric, to 1e-9)"
    )

    checks = {p: sum(bound_checks(only(base[n], p)) for n in base) for p in ("cross", "same")}
    summary, marks = {}, {}
    for b in shifts:
        fails = {"cross": [], "same": []}
        for name, res in base.items():
            res = {**res, SHIFTED: shifted[b][name]}
            marks[b, name] = ""
            for part in fails:
                new = bound_failures(name, only(res, part), SHIFTED)
                fails[part] += new
                marks[b, name] += part[0] if new else ""
        summary[b] = {"missed": {p: len(f) for p, f in fails.items()}, "checks": checks}
        summary[b]["failures"] = fails["cross"] + fails["same"]

    total = checks["cross"] + checks["same"]
    print(f"\n{SHIFTED_BASE} + b on the query's own modality: missed checks (pool {args.pool})")
    print(f"  {'b':>6}  {'cross-modal':>12}  {'same-modal':>12}  {'all':>8}")
    for b, r in summary.items():
        c, sm = r["missed"]["cross"], r["missed"]["same"]
        cross, same = f"{c} / {checks['cross']}", f"{sm} / {checks['same']}"
        print(f"  {b:>6g}  {cross:>12}  {same:>12}  {f'{c + sm} / {total}':>8}")

    print("\nR@10 cross / same of the shifted default (c, s: misses a cross / same-modal check)")
    head = f"  {'set':<32}{'best baseline':>14}" + "".join(f"{f'b={b:g}':>14}" for b in shifts)
    print(head)
    for name, res in base.items():
        line = f"  {name:<32}{cell(best_r10(res, 'cross'), best_r10(res, 'same')):>14}"
        for b in shifts:
            r = shifted[b][name]
            same = r["same"].get("recall@10") if res["_n"]["same"] else None
            line += f"{cell(r['cross']['recall@10'], same, marks[b, name]):>14}"
        print(line)
    print(reach_table(reach))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.json:
        out = {
            "default_method": DEFAULT_METHOD,
            "shifted_method": SHIFTED_BASE,
            "pool": args.pool,
            "seeds": args.seeds,
            "baselines": base,
            "shifts": {f"{b:g}": {**summary[b], "results": shifted[b]} for b in shifts},
            "same_modal_order_reach": reach,
        }
        write_json(args.json, out)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
