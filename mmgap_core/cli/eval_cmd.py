"""`mmgap eval`: every fusion method on the user's own embeddings and relevance judgements."""

from __future__ import annotations

import argparse

from ..jsonio import write_json
from ._common import parse_ks


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate fusion methods on your own embeddings (.npy) and TREC qrels",
        description="Evaluate every fusion method on your own query/corpus embeddings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--queries", required=True, help="query embeddings, float32 .npy [Q, d]")
    p.add_argument("--corpus", required=True, help="corpus embeddings, .npy [N, d]")
    p.add_argument("--modality", required=True, help="text file, one modality label per corpus row")
    p.add_argument("--qrels", required=True, help="TREC qrels: `query_id 0 doc_id relevance` per line")
    p.add_argument("--query-ids", help="one id per query row (default: row numbers)")
    p.add_argument("--doc-ids", help="one id per corpus row (default: row numbers)")
    p.add_argument("--query-modality", default="text", help="modality of the queries")
    p.add_argument(
        "--calibration-queries",
        help="separate, unlabelled calibration query embeddings .npy (default: the evaluation queries "
        "themselves, the paper's transductive setting)",
    )
    p.add_argument("--methods", default="all", help="comma-separated fusion methods, or 'all'")
    p.add_argument("--k", default="1,5,10,20", help="cut-offs for the metrics")
    p.add_argument("--pool", type=int, default=100, help="candidates retrieved per modality per query")
    p.add_argument("--json", metavar="OUT.json", help="also write results as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evalio import load_embeddings, load_ids, load_modalities, parse_qrels
    from ..evaluation import evaluate_embeddings

    ks = parse_ks(args.k)
    corpus = load_embeddings(args.corpus, "corpus")
    queries = load_embeddings(args.queries, "queries", dim=corpus.shape[1])
    modalities = load_modalities(args.modality, corpus.shape[0])
    query_ids = load_ids(args.query_ids, queries.shape[0], "query ids") if args.query_ids else None
    doc_ids = load_ids(args.doc_ids, corpus.shape[0], "doc ids") if args.doc_ids else None
    qrels, qrel_notes = parse_qrels(args.qrels, query_ids, doc_ids, queries.shape[0], corpus.shape[0])
    cal = None
    if args.calibration_queries:
        cal = load_embeddings(args.calibration_queries, "calibration queries", dim=corpus.shape[1])
    report = evaluate_embeddings(
        queries,
        corpus,
        modalities,
        qrels,
        query_modality=args.query_modality,
        calibration_queries=cal,
        methods=args.methods,
        ks=ks,
        pool=args.pool,
    )
    report.stats["notes"] = report.notes + qrel_notes
    print(f"{queries.shape[0]} {args.query_modality} queries, corpus {report.stats['corpus_modalities']}")
    for note in report.notes + qrel_notes:
        print(f"note: {note}")
    print()
    print(report.table())
    if args.json:
        write_json(args.json, report.to_json())
        print(f"wrote {args.json}")
    return 0
