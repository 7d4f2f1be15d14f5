"""``mmgap calibrate``: fit, merge, import, export or reset the statistics a store's search reads.

Calibration reads stored vectors; only calibration query texts (``--queries``) and ``--reset``
load the model. A partial calibration (``--queries``, or ``--query-modalities`` naming some
modalities) refits the statistics of those query modalities and keeps the others, unless
``--replace``.
"""

from __future__ import annotations

import argparse
import copy

from ._common import CommandError, check_output_path, positive_int
from ._store_args import add_store_args, check_model_matches, load_encoder, open_store_for

__all__ = ["describe_calibration", "merge_calibrations", "register", "run_calibrate"]

_DESCRIPTION = """\
Fit the statistics that make text and image scores comparable, from pseudo-positives: each
calibration query's best match per modality, found without labels. The statistics are saved in the
store, and every search reads them.

Calibration queries are, by default, a sample of the store's own items (--sample per query
modality, each excluded from its own candidates); --queries FILE gives your own query texts
instead. A partial calibration (--queries, or --query-modalities naming some modalities) refits
those query modalities and keeps the statistics of the others; --replace drops them.

Recovery: a store whose record names another model (the same checkpoint under another name, or a
store made by an older mmgap) is refused by every command. If the stored vectors were made with
the weights you give now, `mmgap calibrate --reset --pretrained PATH` re-records the store's model
as this one, drops the old calibration and fits a new one. If they were not, index into another
store (--name NEW) instead."""


def register(sub) -> None:
    """Add ``calibrate`` to the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "calibrate",
        help="fit the modality statistics from pseudo-positives (no labels)",
        description=_DESCRIPTION,
    )
    p.add_argument(
        "--queries",
        metavar="FILE",
        help="UTF-8 text file of calibration queries, one per line (loads the model; "
        "default: a sample of the store's own items)",
    )
    p.add_argument(
        "--sample", type=positive_int, default=1000, help="items sampled per query modality"
    )
    p.add_argument(
        "--query-modalities",
        metavar="LIST",
        help="comma-separated query modalities to fit (default: every modality in the store)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="drop the statistics of query modalities this run does not refit",
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="recovery: record the model given now as the store's, drop the calibration and "
        "fit a new one (only if the stored vectors were made with these weights)",
    )
    p.add_argument("--export", metavar="OUT.json", help="also write the calibration to a file")
    p.add_argument(
        "--import",
        dest="import_path",
        metavar="IN.json",
        help="load a calibration from a JSON file instead of fitting one",
    )
    add_store_args(p)
    p.set_defaults(func=run_calibrate)


def _query_modalities(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [m.strip() for m in text.split(",")]
    if not all(names):
        raise CommandError(f"--query-modalities: expected comma-separated names, got {text!r}")
    return list(dict.fromkeys(names))


def _check_options(args) -> None:
    if args.import_path:
        clash = [
            flag
            for flag, on in (
                ("--queries", args.queries),
                ("--query-modalities", args.query_modalities),
                ("--replace", args.replace),
                ("--reset", args.reset),
            )
            if on
        ]
        if clash:
            raise CommandError(f"--import loads a calibration: do not give {', '.join(clash)}")
    if args.queries and args.query_modalities not in (None, "text"):
        raise CommandError("--queries are text queries: --query-modalities can only be 'text'")
    check_output_path(args.export, "--export")


def _stored_record_problem(store) -> str | None:
    """Why the store's saved calibration cannot be used with its own model, else None."""
    from ..calibration.record import CalibrationRecord

    data = store.load_calibration()
    if data is None:
        return None
    try:
        CalibrationRecord.from_dict(data).check_compatible(store.model_id, store.dim)
    except ValueError as exc:
        return " ".join(str(exc).split())
    return None


def run_calibrate(args: argparse.Namespace) -> int:
    """``mmgap calibrate``."""
    from ..engine import RetrievalEngine

    _check_options(args)
    qms = _query_modalities(args.query_modalities)
    queries = None
    if args.queries:
        from ..evalio import read_lines

        queries = read_lines(args.queries, "calibration queries")
    store = open_store_for(args)
    counts = store.counts()
    for m in qms or ():
        if m not in counts:
            raise CommandError(f"unknown query modality {m!r}; the store holds {sorted(counts)}")
    if args.reset:
        return _reset(args, store, queries, qms)
    problem = _stored_record_problem(store)
    if problem:
        raise CommandError(
            f"the stored calibration does not fit this store ({problem}); `mmgap calibrate "
            "--reset` drops it and fits a new one"
        )
    encoder = None
    if queries is not None:  # only query texts need the model
        encoder = load_encoder(args, store.read_manifest().get("encoder"))
        check_model_matches(store, encoder, args)
    engine = RetrievalEngine(store, encoder)
    if args.import_path:
        _import(engine, args.import_path)
    else:
        old = engine.calibration
        engine.calibrate(queries, sample=args.sample, query_modalities=qms)
        if old is not None and not args.replace:
            merged, kept = merge_calibrations(old, engine.calibration)
            if kept:
                store.save_calibration(merged.to_dict())
                engine = RetrievalEngine(store, encoder)
                print(
                    f"kept the statistics of {', '.join(kept)} queries from the previous "
                    "calibration (--replace drops them)"
                )
    print(describe_calibration(engine))
    if args.export:
        engine.export_calibration(args.export)
        print(f"wrote {args.export}")
    return 0


def _import(engine, path: str) -> None:
    """``--import``: check the file (schema, then model) before anything is stored."""
    from ..calibration.record import read_calibration_file

    record = read_calibration_file(path)  # a broken file: one line naming the problem
    try:
        record.check_compatible(engine.model_id, engine.dim)
    except ValueError:
        raise CommandError(
            f"{path} was fitted for model {record.model_id!r} (dim {record.dim}), and this store "
            f"holds vectors of {engine.model_id!r} (dim {engine.dim}): import a calibration of "
            "that model, or fit one with `mmgap calibrate`"
        ) from None
    engine.import_calibration(path)
    print(f"imported calibration from {path}")


def _reset(args, store, queries, qms) -> int:
    """``--reset``: record the given model as the store's, drop the calibration, fit anew."""
    from ..encoders.base import encoder_spec
    from ..engine import RetrievalEngine

    encoder = load_encoder(args, store.read_manifest().get("encoder"))
    if store.dim is not None and encoder.dim != store.dim:
        raise CommandError(
            f"the store holds {store.dim}-dimensional vectors and {encoder.model_id!r} makes "
            f"{encoder.dim}-dimensional ones: they were not made with this model; index into "
            "another store (--name NEW) instead"
        )
    before = store.model_id
    store.update_manifest(
        model_id=encoder.model_id, encoder=encoder_spec(encoder), calibration=None
    )
    print(f"reset: the store's model is now {encoder.model_id!r} (was {before!r})")
    engine = RetrievalEngine(store, encoder)
    engine.calibrate(queries, sample=args.sample, query_modalities=qms)
    print(describe_calibration(engine))
    if args.export:
        engine.export_calibration(args.export)
        print(f"wrote {args.export}")
    return 0


def merge_calibrations(old, new):
    """``new`` plus the query modalities only ``old`` has statistics for.

    Parameters
    ----------
    old, new : CalibrationRecord
        The stored calibration, and the one just fitted (for the same model).

    Returns
    -------
    tuple of (CalibrationRecord, list of str)
        The merged record (checked against the schema), and the query modalities kept from
        ``old`` (empty: ``new`` as it is).
    """
    from ..calibration.record import CalibrationRecord

    a, b = old.to_dict(), new.to_dict()
    refit = {s["query_modality"] for s in b["standardizer"]["stats"]}
    kept = sorted({s["query_modality"] for s in a["standardizer"]["stats"]} - refit)
    if not kept:
        return new, []
    out = copy.deepcopy(b)
    stats = out["standardizer"]["stats"]
    stats += [s for s in a["standardizer"]["stats"] if s["query_modality"] in kept]
    stats.sort(key=lambda s: (s["query_modality"], s["candidate_modality"]))
    for field in ("background_scale", "centered_background_scale"):
        bg_old, bg_new = a.get(field), out.get(field)
        if bg_old and bg_new:
            keys = bg_new["keys"] + [k for k in bg_old["keys"] if k["query_modality"] in kept]
            bg_new["keys"] = sorted(
                keys,
                key=lambda k: (k["query_modality"], k["candidate_modality"], k.get("pool_size", 0)),
            )
            bg_new["query_modalities"] = sorted(
                set(bg_new["query_modalities"]) | (set(bg_old["query_modalities"]) & set(kept))
            )
    queries = dict(a.get("calibration_queries") or {})
    out["calibration_queries"] = {
        **{q: n for q, n in queries.items() if q in kept},
        **(out.get("calibration_queries") or {}),
    }
    out["source"] = (
        f"{b.get('source')}; {', '.join(kept)} queries kept from the fit of {a.get('fitted_at')}"
    )
    return CalibrationRecord.from_dict(out), kept


def describe_calibration(engine) -> str:
    """The calibration in a few lines: provenance, statistics per key, the gap."""
    data = engine.calibration_data()
    if data is None:
        return "not calibrated"
    std = engine.standardizer
    lines = [
        f"calibration for {data.get('model_id')} (dim {data.get('dim')}), {data.get('source')}, "
        f"{data.get('mining')} mining, corpus {data.get('corpus_sizes')}"
    ]
    for q, c in std.keys_:
        flag = "  (fallback std)" if (q, c) in std.fallback_ else ""
        lines.append(
            f"  {q} query -> {c}: mean {std.mean_[(q, c)]:.4f}  std {std.std_[(q, c)]:.4f}  "
            f"n={std.count_[(q, c)]}{flag}"
        )
    for q in std.query_modalities():
        gap = std.gap(q)
        if len(gap) > 1:
            hi, lo = max(gap, key=gap.get), min(gap, key=gap.get)
            lines.append(
                f"  gap for {q} queries: {hi} - {lo} = {gap[hi] - gap[lo]:.4f} (mean best cosine)"
            )
    return "\n".join(lines)
