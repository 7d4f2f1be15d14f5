"""`mmgap index | calibrate | search | inspect`: the store commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
TEXT_SUFFIXES = {".txt", ".md"}


def _connection_args(p) -> None:
    g = p.add_argument_group("store connection")
    g.add_argument("--db", default="mmgap-db", help="embedded Chroma folder (PersistentClient)")
    g.add_argument("--host", help="Chroma server host (`chroma run`); overrides --db")
    g.add_argument("--port", type=int, default=8000, help="Chroma server port")
    g.add_argument("--name", default="mmgap", help="store name (collections are NAME-<modality>)")
    g = p.add_argument_group("model (default: the one the store was built with, else ViT-B-32)")
    g.add_argument("--model", help="open_clip model name, e.g. ViT-B-32")
    g.add_argument("--pretrained", help="open_clip pretrained tag, or a local checkpoint path")
    g.add_argument("--model-config", help="open_clip model-config JSON for a custom architecture")
    g.add_argument("--device", help="torch device (default: cuda, then mps, then cpu)")


def _engine(args, *, needs_model: bool = True, **options):
    """The engine over the store ``args`` name; without the model when only stored vectors are read."""
    from ..factory import open_engine, open_store

    if not needs_model:
        from ..engine import RetrievalEngine

        store = open_store(args.db, host=args.host, port=args.port, name=args.name)
        return RetrievalEngine(store, None, **options)
    return open_engine(
        args.db,
        host=args.host,
        port=args.port,
        name=args.name,
        model=args.model,
        pretrained=args.pretrained,
        model_config=args.model_config,
        device=args.device,
        **options,
    )


def register(sub) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser(
        "index",
        help="index folders/files of images and texts",
        formatter_class=fmt,
        description="Index images (jpg/png/...) and texts (.txt, .md: one item per file; "
        ".jsonl: one item per line with a 'text' field) from files and folders.",
    )
    p.add_argument("paths", nargs="+", help="files or folders (searched recursively)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quiet", action="store_true", help="no progress bar, no per-item skip lines")
    _connection_args(p)
    p.set_defaults(func=run_index)

    p = sub.add_parser(
        "calibrate", help="fit the modality statistics from pseudo-positives", formatter_class=fmt
    )
    p.add_argument(
        "--queries",
        help="text file of calibration queries, one per line "
        "(default: a sample of the store's own items, each excluded from its own candidates)",
    )
    p.add_argument("--sample", type=int, default=1000, help="items sampled per query modality")
    p.add_argument(
        "--query-modalities", help="comma-separated (default: every modality in the store)"
    )
    p.add_argument("--export", metavar="OUT.json", help="also write the calibration to a JSON file")
    p.add_argument(
        "--import",
        dest="import_path",
        metavar="IN.json",
        help="load a calibration from JSON instead of fitting one",
    )
    _connection_args(p)
    p.set_defaults(func=run_calibrate)

    p = sub.add_parser(
        "search", help="one merged, calibrated ranking of texts and images", formatter_class=fmt
    )
    p.add_argument("query", nargs="?", help="query text")
    p.add_argument("--image", help="query image path (instead of a text)")
    p.add_argument("-k", type=int, default=10, help="results to show")
    p.add_argument("--k-per-modality", type=int, help="candidates fetched per modality")
    p.add_argument(
        "--method", default="standardize", help="fusion method (see `mmgap eval --help`)"
    )
    p.add_argument(
        "--compare", action="store_true", help="raw and calibrated rankings side by side"
    )
    p.add_argument("--where", help='metadata filter as JSON, e.g. \'{"source": "a.txt"}\'')
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    _connection_args(p)
    p.set_defaults(func=run_search)

    p = sub.add_parser(
        "inspect",
        help="score statistics, the modality gap, top-k modality shares",
        formatter_class=fmt,
    )
    p.add_argument(
        "--sample", type=int, default=200, help="store items used as probe queries per modality"
    )
    p.add_argument("-k", type=int, default=10, help="top-k for the modality shares")
    p.add_argument("--plot", metavar="OUT.png", help="plot raw vs standardized score distributions")
    _connection_args(p)
    p.set_defaults(func=run_inspect)


# ---------------------------------------------------------------------------- index
def collect_inputs(
    paths,
) -> tuple[list[Path], list[tuple[bytes | str, str, dict]], list[tuple[str, str]]]:
    """(image files, texts as (payload, source, metadata), problems as (source, reason))."""
    images, texts, problems = [], [], []
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file() or p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)  # a missing image file is reported by the engine
        else:
            problems.append((str(p), "file not found"))
    for f in files:
        suffix = f.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            images.append(f)
        elif suffix in TEXT_SUFFIXES:
            # bytes: the engine checks UTF-8
            texts.append((f.read_bytes(), str(f), {"source": str(f)}))
        elif suffix == ".jsonl":
            for lineno, line in enumerate(f.read_bytes().splitlines(), 1):
                src = f"{f}:{lineno}"
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    problems.append((src, f"malformed JSON line: {exc}"))
                    continue
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    problems.append((src, "JSON line has no 'text' string field"))
                    continue
                meta = {
                    k: v
                    for k, v in rec.items()
                    if k != "text" and isinstance(v, (str, int, float, bool))
                }
                meta["source"] = src
                texts.append((rec["text"], src, meta))
    return images, texts, problems


def run_index(args) -> int:
    from ..results import SkippedItem

    images, texts, problems = collect_inputs(args.paths)
    if not images and not texts and not problems:
        raise ValueError(
            f"nothing to index in {args.paths}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
            "or texts (.txt, .md, .jsonl)"
        )
    engine = _engine(args)
    report = engine.index(
        texts=[t[0] for t in texts],
        text_sources=[t[1] for t in texts],
        text_metadatas=[t[2] for t in texts],
        images=images,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    for src, reason in problems:
        modality = "image" if Path(src).suffix.lower() in IMAGE_SUFFIXES else "text"
        report.skipped.append(SkippedItem(src, modality, reason))
    print(report.summary() if not args.quiet else report.summary().splitlines()[0])
    counts = engine.store.counts()
    print(
        f"store {args.name!r} now holds " + ", ".join(f"{n} {m}" for m, n in sorted(counts.items()))
    )
    if not engine.is_calibrated:
        print("next: run `mmgap calibrate` so that search can compare texts and images")
    return 0


# ---------------------------------------------------------------------------- calibrate
def run_calibrate(args) -> int:
    # Calibration reads stored vectors: only calibration query texts need the model.
    engine = _engine(args, needs_model=bool(args.queries) and not args.import_path)
    if args.import_path:
        engine.import_calibration(args.import_path)
        print(f"imported calibration from {args.import_path}")
    else:
        queries = None
        if args.queries:
            from ..evalio import read_lines

            queries = read_lines(args.queries, "calibration queries")
        qms = (
            [m.strip() for m in args.query_modalities.split(",")] if args.query_modalities else None
        )
        engine.calibrate(queries, sample=args.sample, query_modalities=qms)
    print(describe_calibration(engine))
    if args.export:
        engine.export_calibration(args.export)
        print(f"wrote {args.export}")
    return 0


def describe_calibration(engine) -> str:
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


# ---------------------------------------------------------------------------- search
def hit_label(h) -> str:
    """What to show for a hit: its text, else its URI, title or source, else its id."""
    if h.text:
        return str(h.text)
    return str(h.uri or h.metadata.get("title") or h.metadata.get("source") or h.id)


def _fmt_hit(h, width: int = 60) -> str:
    label = hit_label(h)
    label = " ".join(str(label).split())
    if len(label) > width:
        label = label[: width - 1] + "…"
    return f"{h.rank:>3}. [{h.modality:<5}] {h.score:+7.3f} (cos {h.raw_score:.3f})  {label}"


def run_search(args) -> int:
    if (args.query is None) == (args.image is None):
        raise ValueError("give a query text or --image PATH (exactly one)")
    if args.query is not None and not args.query.strip():
        raise ValueError("empty query: give a non-empty text")
    where = json.loads(args.where) if args.where else None
    engine = _engine(args)
    kw = {"k": args.k, "k_per_modality": args.k_per_modality, "where": where}
    if args.compare:
        raw, cal = engine.compare(args.query, args.image, **kw)
        print(side_by_side(raw, cal))
        notes = cal.warnings
    else:
        res = engine.search(args.query, args.image, method=args.method, **kw)
        if args.json:
            print(json.dumps([h.__dict__ for h in res.hits], indent=2, default=str))
        else:
            print(f"{res.method} ranking for a {res.query_modality} query:")
            for h in res.hits:
                print(_fmt_hit(h, 80))
        notes = res.warnings
    for n in notes:
        print(f"note: {n}")
    return 0


def side_by_side(raw, cal, width: int = 44) -> str:
    def cell(h):
        if h is None:
            return ""
        label = " ".join(hit_label(h).split())
        label = label if len(label) <= width - 22 else label[: width - 23] + "…"
        return f"[{h.modality:<5}] {h.score:+6.3f} {label}"

    head = f"{'raw cosine ranking':<{width}} | calibrated ranking (standardize)"
    lines = [head, "-" * len(head)]
    for i in range(max(len(raw), len(cal))):
        a = cell(raw.hits[i] if i < len(raw) else None)
        b = cell(cal.hits[i] if i < len(cal) else None)
        lines.append(f"{a:<{width}} | {b}")
    share = ", ".join(
        f"{m}: {sum(h.modality == m for h in raw)} -> {sum(h.modality == m for h in cal)}"
        for m in sorted({h.modality for h in list(raw) + list(cal)})
    )
    lines.append(f"modality counts raw -> calibrated: {share}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- inspect
def run_inspect(args) -> int:
    import numpy as np

    from ..calibration import query_best_hits

    engine = _engine(args, needs_model=False)  # probes are stored vectors
    counts = engine.store.counts()
    print(f"store {args.name!r}: " + ", ".join(f"{n} {m}" for m, n in sorted(counts.items())))
    print(f"model: {engine.store.model_id}  dim: {engine.store.dim}")
    print(describe_calibration(engine))
    if not engine.is_calibrated:
        print("run `mmgap calibrate` to fit the statistics")
        return 0
    fitted_q = engine.standardizer.query_modalities()
    panels = {}
    for qm in fitted_q:
        if counts.get(qm, 0) == 0:
            continue
        probe_ids, _docs, probes = engine.store.sample_documents(qm, args.sample, 0)
        share_raw = {m: 0 for m in counts}
        share_cal = {m: 0 for m in counts}
        for pid, vec in zip(probe_ids, probes):
            # The probe is a store item: drop its own hit before counting.
            for method, share in (("raw", share_raw), ("standardize", share_cal)):
                res = engine.search(embedding=vec, query_modality=qm, k=args.k + 1, method=method)
                for h in [h for h in res.hits if h.id != pid][: args.k]:
                    share[h.modality] += 1
        # Each probe's best score per modality, the probe itself excluded.
        best = query_best_hits(engine.store, probes, probe_ids)
        top1 = {m: v[~np.isnan(v)] for m, v in best.items()}
        n = max(len(probes) * args.k, 1)
        print(f"top-{args.k} modality share for {len(probes)} {qm} probe queries (store items):")
        for m in sorted(counts):
            print(f"  {m:<6} raw {share_raw[m] / n:6.1%}   calibrated {share_cal[m] / n:6.1%}")
        panels[f"{qm} queries"] = (
            {m: v for m, v in top1.items() if v.size},
            engine.standardizer,
            qm,
        )
    if args.plot:
        from ..plotting import plot_gap

        plot_gap(panels, args.plot, what="best score per modality (probe queries)")
        print(f"wrote {args.plot}")
    return 0
