"""`mmgap reproduce`: the paper's MMQA / WebQA experiment (cross-modal Recall@K, raw vs std), and
MixBench's three-kind head-to-head with GR-CLIP (nDCG@10 by gold kind)."""

from __future__ import annotations

import argparse
import sys

from ..datasets.mixbench import MIXBENCH_SUBSETS, PARQUET_HINT
from ..jsonio import write_json
from ._common import parse_ks


def register(sub) -> None:
    """Add the ``reproduce`` sub-command to the CLI's sub-parsers ``sub``."""
    p = sub.add_parser(
        "reproduce",
        help="reproduce the paper's MMQA / WebQA experiment, or MixBench, with open_clip models",
        description="Embed a benchmark (MMQA, WebQA or MixBench) with one or more open_clip "
        "models, cache the embeddings, and report Recall@K of every fusion method split by the "
        "modality of the gold item (text = same-modal, image = cross-modal), raw vs standardized. "
        "MixBench (--dataset mixbench --subset S --root DIR, DIR/S/ holding query, corpus, qrel "
        "[and mixed_corpus] as .jsonl or .parquet plus images/) adds multimodal documents and "
        "reports nDCG@10 by gold kind, head to head with GR-CLIP's mean subtraction.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        default="auto",
        choices=["mmqa", "webqa", "mixbench", "auto"],
        help="benchmark in --root ('auto' detects it from the files)",
    )
    p.add_argument(
        "--root",
        required=True,
        help="folder holding the benchmark files (MixBench: the folder holding SUBSET/)",
    )
    p.add_argument(
        "--subset",
        choices=list(MIXBENCH_SUBSETS),
        help="MixBench subset (required with --dataset mixbench)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="MixBench: text weight of a multimodal document, normalise(a*text + (1-a)*image)",
    )
    p.add_argument("--model", help="open_clip architecture, e.g. ViT-B-32")
    p.add_argument(
        "--pretrained",
        help="pretrained tag of --model (e.g. laion2b_s34b_b79k) or a checkpoint file",
    )
    p.add_argument(
        "--model-config",
        metavar="JSON",
        help="open_clip model config NAME.json for a custom architecture named NAME",
    )
    p.add_argument(
        "--models",
        metavar="NAME:TAG,...",
        help="several models, one table over all of them (added after --model)",
    )
    p.add_argument("--split", help="dataset split (default: dev for MMQA, val for WebQA)")
    p.add_argument(
        "--pool",
        choices=["context", "global"],
        help="candidates: each question's own context pool, or the whole corpus (default: "
        "context; MixBench: global, its only pool)",
    )
    p.add_argument(
        "--methods",
        default="all",
        help="comma-separated fusion methods, or 'all' (MixBench: all plus grclip)",
    )
    p.add_argument("--k", default="1,5,10,20", help="Recall@K cut-offs")
    p.add_argument(
        "--cache-dir",
        help="embedding cache (default: ROOT/.mmgap-cache if writable, else ~/.cache/mmgap)",
    )
    p.add_argument("--no-cache", action="store_true", help="embed everything, write no cache")
    p.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    p.add_argument(
        "--csv", metavar="OUT.csv", help="also write one CSV row per model/method/subset/metric"
    )
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="keep only the first N questions of each gold modality (quick runs)",
    )
    p.add_argument("--device", help="torch device (default: cuda, then mps, then cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    p.add_argument("--weights-dir", help="where open_clip looks for / downloads model weights")
    p.add_argument(
        "--candidates",
        type=int,
        default=100,
        help="global pool: candidates retrieved per modality per question before fusion",
    )
    p.add_argument(
        "--caption-baseline",
        choices=["metadata"],
        help="add a 'caption-baseline' row: images as their caption (metadata: the image "
        "title) embedded as text, retrieved text-to-text by raw cosine",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _specs(args):
    """The model specs named by --model/--pretrained and --models."""
    from ..reproduce import ModelSpec, parse_model_specs

    specs = []
    if args.model:
        if not args.pretrained:
            raise ValueError(
                "--model needs --pretrained (a tag such as laion2b_s34b_b79k, or a checkpoint file)"
            )
        specs.append(
            ModelSpec.parse(f"{args.model}:{args.pretrained}", model_config=args.model_config)
        )
    elif args.pretrained:
        raise ValueError("--pretrained needs --model")
    if args.models:
        specs += parse_model_specs(args.models, model_config=args.model_config)
    if not specs:
        raise ValueError("name a model: --model NAME --pretrained TAG, or --models NAME:TAG,...")
    if args.model_config and not any(s.model_config for s in specs):
        raise ValueError(
            f"--model-config {args.model_config}: open_clip names a config after its file, so it "
            f"defines a model the command does not use; pass --model with the file's name "
            f"(without .json)"
        )
    return specs


def run(args) -> int:
    """Run ``mmgap reproduce``: load the dataset, evaluate each model, print and write the report.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        0; errors are raised for the CLI to print (``CommandError``, ``ValueError``, ...).
    """
    from ..datasets import load_dataset
    from ..reproduce import default_cache_dir, reproduce
    from . import CommandError

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    ks = parse_ks(args.k)
    specs = _specs(args)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit: expected a positive number of questions, got {args.limit}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    if args.dataset == "mixbench" and args.subset is None:
        raise ValueError(f"--dataset mixbench needs --subset ({', '.join(MIXBENCH_SUBSETS)})")
    if args.subset is not None and args.dataset not in ("mixbench", "auto"):
        raise ValueError(f"--subset applies to --dataset mixbench only, not {args.dataset}")
    if args.dataset == "mixbench" and args.split is not None:
        raise ValueError("--split does not apply to MixBench; choose the subset with --subset")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha: expected a number in [0, 1], got {args.alpha}")
    try:
        dataset = load_dataset(
            args.dataset, args.root, split=args.split, pool=args.pool, subset=args.subset
        )
    except ImportError as exc:  # a parquet split without pyarrow: one line, not a traceback
        hint = "" if PARQUET_HINT in str(exc) else f" ({PARQUET_HINT})"
        raise CommandError(f"{exc}{hint}") from None
    print(dataset.summary())
    print()
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir(args.root))
    if cache_dir is not None:
        log(f"embedding cache: {cache_dir}")
    options = {"device": args.device, "batch_size": args.batch_size}
    if args.weights_dir:
        options["cache_dir"] = args.weights_dir
    captioner = None
    if args.caption_baseline == "metadata":
        from ..captioning import MetadataCaptioner

        captioner = MetadataCaptioner()
    report = reproduce(
        dataset,
        specs,
        pool=args.pool,
        methods=args.methods,
        ks=ks,
        cache_dir=cache_dir,
        captioner=captioner,
        progress=not args.no_progress,
        limit=args.limit,
        encoder_options=options,
        candidates=args.candidates,
        log=log,
        alpha=args.alpha,
    )
    if not report.models:
        reasons = "; ".join(f"{label}: {reason}" for label, reason in report.skipped_models.items())
        raise CommandError(f"no model could be run ({reasons})")
    print(report.table())
    if args.json:
        write_json(args.json, report.to_json())
        print(f"wrote {args.json}")
    if args.csv:
        report.write_csv(args.csv)
        print(f"wrote {args.csv}")
    return 0
