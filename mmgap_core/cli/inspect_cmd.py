"""``mmgap inspect``: a store's contents, calibration, modality gap and top-k modality shares.

Reads stored vectors only: store items serve as probe queries, so no model is loaded.
"""

from __future__ import annotations

from ._common import add_method_arg, method_epilog, positive_int
from ._store_args import add_store_args, open_engine_for

__all__ = ["register", "run_inspect"]


def register(sub) -> None:
    """Add ``inspect`` to the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "inspect",
        help="the store's calibration, the modality gap, top-k modality shares",
        description="Describe a store without loading a model: items per modality, the model it "
        "was built with, the calibration statistics and the modality gap. Then, with store items "
        "as probe queries (each excluded from its own results), the share of each modality in "
        "the top -k, by raw cosine and by --method. --plot draws the best score per modality "
        "before and after standardization.",
        epilog=method_epilog(),
    )
    p.add_argument(
        "--sample", type=positive_int, default=200, help="probe queries per modality (store items)"
    )
    p.add_argument("-k", type=positive_int, default=10, help="top-k for the modality shares")
    add_method_arg(p, "fusion method of the calibrated shares")
    p.add_argument("--plot", metavar="OUT.png", help="plot raw vs standardized score distributions")
    add_store_args(p, model=False)
    p.set_defaults(func=run_inspect)


def run_inspect(args) -> int:
    """``mmgap inspect``."""
    import numpy as np

    from ..calibration import query_best_hits
    from ..plotting import check_plot_path
    from .calibrate_cmd import describe_calibration
    from .search_cmd import precheck

    if args.plot:
        check_plot_path(args.plot)
    engine = open_engine_for(args, needs_model=False)  # probes are stored vectors
    counts = engine.store.counts()
    print(f"store {args.name!r}: " + ", ".join(f"{n} {m}" for m, n in sorted(counts.items())))
    print(f"model: {engine.store.model_id}  dim: {engine.store.dim}")
    print(describe_calibration(engine))
    if not engine.is_calibrated:
        print("run `mmgap calibrate` to fit the statistics")
        return 0
    fitted_q = [q for q in engine.standardizer.query_modalities() if counts.get(q, 0) > 0]
    for qm in fitted_q:
        precheck(engine, args.method, qm)
    panels = {}
    for qm in fitted_q:
        probe_ids, _docs, probes = engine.store.sample_documents(qm, args.sample, 0)
        share_raw = {m: 0 for m in counts}
        share_cal = {m: 0 for m in counts}
        for pid, vec in zip(probe_ids, probes):
            # The probe is a store item: drop its own hit before counting.
            for method, share in (("raw", share_raw), (args.method, share_cal)):
                res = engine.search(embedding=vec, query_modality=qm, k=args.k + 1, method=method)
                for h in [h for h in res.hits if h.id != pid][: args.k]:
                    share[h.modality] += 1
        # Each probe's best score per modality, the probe itself excluded.
        best = query_best_hits(engine.store, probes, probe_ids)
        top1 = {m: v[~np.isnan(v)] for m, v in best.items()}
        n = max(len(probes) * args.k, 1)
        print(f"top-{args.k} modality share for {len(probes)} {qm} probe queries (store items):")
        for m in sorted(counts):
            print(f"  {m:<6} raw {share_raw[m] / n:6.1%}   {args.method} {share_cal[m] / n:6.1%}")
        panels[f"{qm} queries"] = (
            {m: v for m, v in top1.items() if v.size},
            engine.standardizer,
            qm,
        )
    if args.plot and panels:
        from ..plotting import plot_gap

        plot_gap(panels, args.plot, what="best score per modality (probe queries)")
        print(f"wrote {args.plot}")
    return 0
