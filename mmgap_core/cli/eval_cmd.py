"""``mmgap eval``: every fusion method on the user's own embeddings and relevance judgements."""

from __future__ import annotations

from ..jsonio import write_json
from ._common import CommandError, check_output_path, method_epilog, parse_ks, positive_int

__all__ = ["register", "run"]


def register(sub) -> None:
    """Add ``eval`` to the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "eval",
        help="evaluate fusion methods on your own embeddings (.npy) and TREC qrels",
        description="Evaluate fusion methods on your own query/corpus embeddings: each query's "
        "candidates are retrieved exactly per modality (--pool each), merged by every method, and "
        "scored against the qrels, split by the modality of the relevant item.",
        epilog=method_epilog("--methods", search=False),
    )
    p.add_argument("--queries", required=True, help="query embeddings, float32 .npy [Q, d]")
    p.add_argument("--corpus", required=True, help="corpus embeddings, .npy [N, d]")
    p.add_argument("--modality", required=True, help="text file, one modality label per corpus row")
    p.add_argument(
        "--qrels", required=True, help="TREC qrels: `query_id 0 doc_id relevance` per line"
    )
    p.add_argument("--query-ids", help="one id per query row (default: row numbers)")
    p.add_argument("--doc-ids", help="one id per corpus row (default: row numbers)")
    p.add_argument(
        "--query-modality",
        default="text",
        help="modality of the queries: text, image, or a label of the corpus",
    )
    p.add_argument(
        "--calibration-queries",
        help="separate, unlabelled calibration query embeddings .npy (default: the evaluation "
        "queries themselves, the paper's transductive setting)",
    )
    p.add_argument("--methods", default="all", help="comma-separated fusion methods, or 'all'")
    p.add_argument("--k", default="1,5,10,20", help="cut-offs for the metrics")
    p.add_argument(
        "--pool",
        type=positive_int,
        default=100,
        help="candidates retrieved per modality per query (at most the corpus size)",
    )
    p.add_argument("--json", metavar="OUT.json", help="also write results as JSON")
    p.set_defaults(func=run)


def _cutoffs(ks: tuple[int, ...], n_corpus: int, notes: list[str]) -> tuple[int, ...]:
    """The cut-offs the corpus can fill; the others are dropped with a note."""
    kept = tuple(k for k in ks if k <= n_corpus)
    if not kept:
        raise CommandError(f"--k: every cut-off exceeds the corpus size ({n_corpus})")
    if len(kept) < len(ks):
        dropped = ", ".join(str(k) for k in ks if k > n_corpus)
        notes.append(f"--k: cut-offs {dropped} exceed the corpus size ({n_corpus}); dropped")
    return kept


def run(args) -> int:
    """``mmgap eval``."""
    from ..evalio import load_embeddings, load_ids, load_modalities, parse_qrels
    from ..evaluation import evaluate_embeddings
    from ..fusion import DEFAULT_METHOD, parse_methods

    ks = parse_ks(args.k)
    parse_methods(args.methods)  # a misspelt name fails before any file is read
    check_output_path(args.json, "--json")
    corpus = load_embeddings(args.corpus, "corpus")
    queries = load_embeddings(args.queries, "queries", dim=corpus.shape[1])
    modalities = load_modalities(args.modality, corpus.shape[0])
    known = {"text", "image", *map(str, modalities)}
    if args.query_modality not in known:
        raise CommandError(
            f"--query-modality {args.query_modality!r} is neither text, image nor a corpus "
            f"modality ({', '.join(sorted(set(map(str, modalities))))})"
        )
    query_ids = load_ids(args.query_ids, queries.shape[0], "query ids") if args.query_ids else None
    doc_ids = load_ids(args.doc_ids, corpus.shape[0], "doc ids") if args.doc_ids else None
    qrels, qrel_notes = parse_qrels(
        args.qrels, query_ids, doc_ids, queries.shape[0], corpus.shape[0]
    )
    cal = None
    if args.calibration_queries:
        cal = load_embeddings(args.calibration_queries, "calibration queries", dim=corpus.shape[1])
    notes: list[str] = []
    n_corpus = int(corpus.shape[0])
    ks = _cutoffs(ks, n_corpus, notes)
    pool = args.pool
    if pool > n_corpus:
        notes.append(f"--pool {pool} exceeds the corpus size: capped at {n_corpus}")
        pool = n_corpus
    if pool < ks[-1]:
        raise CommandError(f"--pool ({pool}) must be at least the largest --k ({ks[-1]})")
    report = evaluate_embeddings(
        queries,
        corpus,
        modalities,
        qrels,
        query_modality=args.query_modality,
        calibration_queries=cal,
        methods=args.methods,
        ks=ks,
        pool=pool,
    )
    all_notes = notes + report.notes + qrel_notes
    report.stats["notes"] = all_notes
    report.stats.setdefault("default_method", DEFAULT_METHOD)
    print(
        f"{queries.shape[0]} {args.query_modality} queries, corpus "
        f"{report.stats['corpus_modalities']}"
    )
    for note in all_notes:
        print(f"note: {note}")
    print()
    print(report.table())
    if args.json:
        write_json(args.json, report.to_json())
        print(f"wrote {args.json}")
    return 0
