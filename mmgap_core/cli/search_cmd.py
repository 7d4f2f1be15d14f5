"""``mmgap search``: one merged ranking of texts and images, or raw and calibrated side by side."""

from __future__ import annotations

import json
import os
import stat
import sys
import warnings
from pathlib import Path, PurePath

from ._common import (
    CommandError,
    add_method_arg,
    method_epilog,
    method_unit,
    parse_where,
    positive_int,
    print_notes,
)
from ._store_args import add_store_args, check_model_matches, load_encoder, open_engine_for

__all__ = ["display_labels", "hit_label", "register", "run_search", "side_by_side"]


def register(sub) -> None:
    """Add ``search`` to the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "search",
        help="one merged, calibrated ranking of texts and images",
        description="Search the store with a text or an image. Each modality's collection is "
        "queried for candidates, their scores are made comparable with --method, and the best -k "
        "are shown as one ranking, with the raw cosine of each hit. --compare shows the raw "
        "cosine ranking next to the --method ranking.",
        epilog=method_epilog(),
    )
    p.add_argument("query", nargs="?", help="query text")
    p.add_argument("--image", metavar="PATH", help="query image file (instead of a text)")
    p.add_argument("-k", type=positive_int, default=10, help="results to show")
    p.add_argument(
        "--k-per-modality",
        type=positive_int,
        metavar="N",
        help="candidates fetched per modality (default: max(k, 50))",
    )
    add_method_arg(p, "fusion method that merges the modalities")
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--compare", action="store_true", help="raw cosine and --method rankings side by side"
    )
    out.add_argument("--json", action="store_true", help="print the hits as JSON")
    p.add_argument(
        "--where", metavar="JSON", help='metadata filter, e.g. \'{"source": "notes/a.txt"}\''
    )
    add_store_args(p)
    p.set_defaults(func=run_search)


# ---------------------------------------------------------------------------- checks
def _check_query(args) -> str:
    """The query errors that need neither store nor model; returns the query modality."""
    if (args.query is None) == (args.image is None):
        raise CommandError("give a query text or --image PATH (exactly one)")
    if args.query is not None:
        if not args.query.strip():
            raise CommandError("empty query: give a non-empty text")
        return "text"
    path = Path(args.image).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CommandError(f"query image not found: {args.image}") from None
    except OSError as exc:
        raise CommandError(f"query image {args.image}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CommandError(f"query image {args.image} is not a regular file")
    if not os.access(path, os.R_OK):
        raise CommandError(f"query image {args.image} is not readable")
    return "image"


def precheck(engine, method: str, query_modality: str) -> None:
    """Everything a search needs besides the model: items, and the calibration ``method`` reads.

    Raises
    ------
    NotCalibratedError, CommandError
        With the command that fixes it.
    """
    from ..calibration.record import NotCalibratedError
    from ..fusion import method_class

    counts = engine.store.counts()
    live = [m for m, n in counts.items() if n > 0]
    if not live:
        raise CommandError("the store is empty: index texts and images first (`mmgap index`)")
    cls = method_class(method)
    if not (cls.needs_standardizer or cls.needs_background_scale or cls.needs_center_means):
        return
    record = engine.calibration
    if record is None:
        raise NotCalibratedError(
            "this store is not calibrated yet: run `mmgap calibrate` after indexing, or search "
            "with --method raw"
        )
    # The default falls back to background-z on a record from before it, as the search will.
    method = record.usable_method(method, query_modality)
    cls = method_class(method)
    record.check_method(cls, method, query_modality)
    missing = record.missing_candidates(query_modality, live, cls)
    if missing:
        raise NotCalibratedError(
            f"the calibration has no statistics for {missing} items (the store gained them after "
            "calibration): run `mmgap calibrate` again"
        )


# ---------------------------------------------------------------------------- running
def run_search(args) -> int:
    """``mmgap search``: checks first, then the model, then the search."""
    from ..engine import RetrievalEngine

    qmod = _check_query(args)
    where = parse_where(args.where)
    bare = open_engine_for(args, needs_model=False)  # the store must exist; no model yet
    precheck(bare, args.method, qmod)
    store = bare.store
    encoder = load_encoder(args, store.read_manifest().get("encoder"))
    check_model_matches(store, encoder, args)
    engine = RetrievalEngine(store, encoder)
    kw = {"k": args.k, "k_per_modality": args.k_per_modality, "where": where}
    with warnings.catch_warnings():
        # The growth warning comes back as a note of the result: print it once, as a note.
        warnings.filterwarnings("ignore", message=".*corpus grew.*")
        if args.compare:
            raw, cal = engine.compare(args.query, args.image, method=args.method, **kw)
            notes = raw.warnings + cal.warnings
        else:
            res = engine.search(args.query, args.image, method=args.method, **kw)
            notes = res.warnings
    if args.compare:
        print(side_by_side(raw, cal))
    elif args.json:
        print(json.dumps([h.__dict__ for h in res.hits], indent=2, default=str))
    else:
        print(
            f"{res.method} ranking for a {res.query_modality} query (score: "
            f"{method_unit(res.method)}; cos: raw cosine):"
        )
        for h, label in zip(res.hits, display_labels(res.hits)):
            print(_fmt_hit(h, label, 80))
    print_notes(notes, file=sys.stderr if args.json else None)
    return 0


# ---------------------------------------------------------------------------- output
def hit_label(h) -> str:
    """What to show for a hit: its text, else its URI, title or source, else its id."""
    if h.text:
        return str(h.text)
    return str(h.uri or h.metadata.get("title") or h.metadata.get("source") or h.id)


def _ref(h) -> str | None:
    """The file a hit without text comes from, if any: its URI, else (untitled) its source."""
    if h.text:
        return None
    ref = h.uri or (None if h.metadata.get("title") else h.metadata.get("source"))
    return str(ref) if ref else None


def display_labels(hits) -> list[str]:
    """A short label per hit: texts as they are; files by name, with parent folders where names
    repeat among ``hits`` for different files (so two images are never shown alike)."""
    refs = [_ref(h) for h in hits]
    paths = {r: PurePath(r) for r in refs if r}
    by_name: dict[str, set[str]] = {}
    for r, p in paths.items():
        by_name.setdefault(p.name, set()).add(r)
    labels = []
    for h, r in zip(hits, refs):
        if r is None:
            labels.append(" ".join(hit_label(h).split()))
            continue
        p = paths[r]
        depth = 1
        if len(by_name[p.name]) > 1:  # the shortest tail that tells the files apart
            others = [paths[o].parts for o in by_name[p.name] if o != r]
            depth = 2
            while depth < len(p.parts) and any(o[-depth:] == p.parts[-depth:] for o in others):
                depth += 1
        labels.append("/".join(p.parts[-depth:]))
    return labels


def _shorten(label: str, width: int, *, keep_end: bool) -> str:
    label = " ".join(label.split())
    if len(label) <= width:
        return label
    return "…" + label[-(width - 1) :] if keep_end else label[: width - 1] + "…"


def _fmt_hit(h, label: str, width: int = 60) -> str:
    short = _shorten(label, width, keep_end=_ref(h) is not None)
    return f"{h.rank:>3}. [{h.modality:<5}] {h.score:+7.3f} (cos {h.raw_score:.3f})  {short}"


def side_by_side(raw, cal, width: int = 50) -> str:
    """Two rankings in columns: the raw cosine one left, the calibrated one right.

    The first two lines are the header, the last one the modality counts; one line per rank in
    between. Labels name files (with a parent folder where names repeat), texts by their start.
    """
    hits = list(raw) + list(cal)
    label = dict(zip((id(h) for h in hits), display_labels(hits)))
    room = width - 17

    def cell(h) -> str:
        if h is None:
            return ""
        short = _shorten(label[id(h)], room, keep_end=_ref(h) is not None)
        return f"[{h.modality:<5}] {h.score:+7.3f} {short}"

    method = getattr(cal, "method", "calibrated")
    head = (
        f"{'raw cosine ranking (cosine)':<{width}} | calibrated ranking: {method} "
        f"({method_unit(method)})"
    )
    lines = [head, "-" * len(head)]
    for i in range(max(len(raw), len(cal))):
        a = cell(raw.hits[i] if i < len(raw) else None)
        b = cell(cal.hits[i] if i < len(cal) else None)
        lines.append(f"{a:<{width}} | {b}")
    share = ", ".join(
        f"{m}: {sum(h.modality == m for h in raw)} -> {sum(h.modality == m for h in cal)}"
        for m in sorted({h.modality for h in hits})
    )
    lines.append(f"modality counts raw -> calibrated: {share}")
    return "\n".join(lines)
