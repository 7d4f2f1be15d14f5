"""``mmgap bench``: every fusion method on every simulator profile."""

from __future__ import annotations

import time

from ..jsonio import write_json
from ._common import check_output_path, method_epilog

__all__ = ["BENCH_METRICS", "register", "run"]

BENCH_METRICS = ["recall@1", "recall@5", "recall@10", "recall@20", "mrr@10", "ndcg@10"]


def register(sub) -> None:
    """Add ``bench`` to the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "bench",
        help="run every fusion method on every simulator profile",
        description="Run every fusion method on the built-in mixed-modality simulator profiles "
        "and print Recall@1/5/10/20, MRR@10, nDCG@10 and the top-20 modality share, cross-modal "
        "and same-modal apart.",
        epilog=method_epilog("--methods", search=False),
    )
    p.add_argument("--profiles", default="all", help="comma-separated simulator profiles, or 'all'")
    p.add_argument("--methods", default="all", help="comma-separated fusion methods, or 'all'")
    p.add_argument("--list", action="store_true", help="list the simulator profiles and exit")
    p.add_argument("--json", metavar="OUT.json", help="also write all results as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="plot raw vs standardized score distributions")
    p.set_defaults(func=run)


def run(args) -> int:
    """``mmgap bench``."""
    from ..evaluation import evaluate_embeddings, format_table
    from ..fusion import parse_methods
    from ..simulator import PROFILES, profile_table, simulate

    if args.list:
        print(profile_table())
        return 0
    names = (
        list(PROFILES)
        if args.profiles.strip() in ("", "all")
        else [s.strip() for s in args.profiles.split(",")]
    )
    for n in names:
        if n not in PROFILES:
            raise ValueError(
                f"unknown simulator profile {n!r}; known profiles: {', '.join(PROFILES)}"
            )
    parse_methods(args.methods)
    check_output_path(args.json, "--json")
    if args.plot:
        from ..plotting import check_plot_path

        check_plot_path(args.plot)
    out = {"profiles": {}}
    panels = {}
    for name in names:
        t0 = time.perf_counter()
        data = simulate(name)
        report = evaluate_embeddings(
            data.queries,
            data.corpus,
            data.modalities,
            data.qrels,
            query_modality=data.query_modality,
            methods=args.methods,
            ks=(1, 5, 10, 20),
        )
        elapsed = time.perf_counter() - t0
        counts = report.stats["corpus_modalities"]
        print(
            f"== profile {name}: {data.queries.shape[0]} {data.query_modality} queries, "
            f"corpus {counts}, d={data.corpus.shape[1]} ({elapsed:.1f} s)"
        )
        print(PROFILES[name].description)
        print(format_table(report.results, data.query_modality, BENCH_METRICS))
        out["profiles"][name] = report.to_json()
        panels[name] = (report.top1_scores, report.standardizer, data.query_modality)
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")
    if args.plot:
        from ..plotting import plot_gap

        plot_gap(panels, args.plot)
        print(f"wrote {args.plot}")
    return 0
