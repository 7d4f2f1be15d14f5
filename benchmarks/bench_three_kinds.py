"""Every fusion method on a three-kind corpus (text, image, multimodal) of real CLIP vectors.

Data: OpenAI CLIP ViT-B/16 on 500 MS-COCO image-caption pairs (``benchmarks/data/real-embeddings``,
MIT; ``[0]`` images, ``[1]`` captions, row ``i`` = pair ``i``, unit rows). There is one caption per
image, and no model or other data set offline.

Design (issue 12, item 4):

* **Corpus.** Every pair is in the corpus once, as one kind, assigned 1:1:1 by GR-CLIP's seeded rule
  (:func:`mmgap_core.datasets.mixbench.assign_kinds`: ``random.Random(seed).sample``, seed 42 for
  the first run): its caption (text), its image (image), or their fusion
  ``normalise(alpha * caption + (1 - alpha) * image)`` (multimodal, alpha 0.5).
* **Queries.** Captions of the pairs held out of the corpus's text side: the pairs stored as an
  image or as a multimodal document (about 333 queries). A text pair's caption is a corpus item, so
  a query of it would find itself; text pairs are distractors only, and no query has a text gold
  item (the array has no second caption to make one).
* **Gold.** The query's own pair, as stored: its image (gold kind "image": the caption appears
  nowhere in the corpus; the hard, cross-modal case) or its multimodal document (gold kind
  "multimodal": the document holds the query caption at weight alpha; the known-item case, where a
  method must not push the document down while lifting images).

Each method runs through :func:`mmgap_core.evaluation.evaluate_embeddings` (the code behind
``mmgap eval``; transductive calibration, ``--pool`` candidates per kind), plus ``grclip``
(GR-CLIP's mean subtraction with its own query mean,
:class:`mmgap_core.fusion_grclip.GRClipFusion`, not registered yet) scored from the same
candidates by :func:`mmgap_core.reproduce.evaluate_local_methods`. nDCG@10, R@1 and R@10 are printed
per gold kind, averaged over ``--seeds`` kind assignments (seeds 42, 43, ...).

Run from the repository root::

    .venv/bin/python benchmarks/bench_three_kinds.py [--seeds 5] [--alpha 0.5] [--pool 100]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_quality import capped_pool  # noqa: E402
from mmgap_core import fusion  # noqa: E402
from mmgap_core.datasets.mixbench import assign_kinds  # noqa: E402
from mmgap_core.evaluation import evaluate_embeddings  # noqa: E402
from mmgap_core.jsonio import write_json  # noqa: E402
from mmgap_core.metrics import Qrels  # noqa: E402
from mmgap_core.mining import topk_per_modality  # noqa: E402
from mmgap_core.reproduce import LOCAL_METHODS, evaluate_local_methods  # noqa: E402

logger = logging.getLogger(__name__)

COCO = Path(__file__).resolve().parent / "data" / "real-embeddings" / "clip_vitb16_coco500.npy"
KS = (1, 10)
METRICS = ("ndcg@10", "recall@1", "recall@10")
SUBSETS = ("all", "image", "multimodal")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def three_kind_set(arr: np.ndarray, seed: int, alpha: float) -> dict:
    """Build one three-kind retrieval set (see the module docstring).

    Parameters
    ----------
    arr : numpy.ndarray
        ``[2, n, d]``: images, captions.
    seed : int
        The seed of the 1:1:1 kind assignment.
    alpha : float
        The caption's weight in a multimodal document.

    Returns
    -------
    dict
        ``queries [Q, d]``, ``corpus [n, d]``, ``labels [n]``, ``qrels [Q, 3]`` and
        ``gold_kind [Q]``.
    """
    images, captions = _unit(arr[0].astype(np.float64)), _unit(arr[1].astype(np.float64))
    n = images.shape[0]
    kinds = assign_kinds([str(i) for i in range(n)], seed=seed)
    labels = np.array([kinds[str(i)] for i in range(n)])
    corpus = np.where(
        (labels == "text")[:, None],
        captions,
        np.where(
            (labels == "image")[:, None], images, _unit(alpha * captions + (1 - alpha) * images)
        ),
    )
    held_out = np.flatnonzero(labels != "text")  # captions not on the corpus's text side
    qrels = np.stack(
        [np.arange(held_out.size), held_out, np.ones(held_out.size, dtype=np.int64)], 1
    )
    return {
        "queries": captions[held_out].astype(np.float32),
        "corpus": corpus.astype(np.float32),
        "labels": labels,
        "qrels": qrels,
        "gold_kind": labels[held_out],
    }


def evaluate_set(s: dict, methods: list[str], pool: int) -> dict:
    """``{method: {subset: {metric: value}}}`` for one set, every method incl. the local ones."""
    registered = [m for m in methods if m in fusion.METHOD_NAMES]
    local = [m for m in methods if m not in fusion.METHOD_NAMES]
    args = (s["queries"], s["corpus"], s["labels"])
    report = evaluate_embeddings(*args, s["qrels"], methods=registered, ks=KS, pool=pool)
    rows = list(report.results)
    if local:
        top = topk_per_modality(*args, pool)
        qrels = Qrels(s["qrels"], s["queries"].shape[0])
        rows += evaluate_local_methods(local, top, *args, qrels, ks=KS)[0]
    out: dict = {m: {sub: {} for sub in SUBSETS} for m in methods}
    for r in rows:
        if r["subset"] in SUBSETS and r["metric"] in METRICS:
            out[r["method"]][r["subset"]][r["metric"]] = r["value"]
    return out


def average(runs: list[dict]) -> dict:
    """Mean of each number over the runs (seeds)."""
    first = runs[0]
    return {
        m: {
            sub: {k: float(np.mean([r[m][sub][k] for r in runs])) for k in first[m][sub]}
            for sub in first[m]
        }
        for m in first
    }


def format_table(res: dict, methods: list[str], counts: dict, default: str | None) -> str:
    """One row per method: nDCG@10 / R@1 / R@10 for all queries and each gold kind."""
    heads = {"ndcg@10": "nDCG@10", "recall@1": "R@1", "recall@10": "R@10"}
    lines = [
        f"{'gold kind (queries):':<22}" + "".join(f"{f'{s} ({counts[s]})':^27}" for s in SUBSETS),
        f"{'method':<22}" + "".join(f"{heads[m]:>9}" for _ in SUBSETS for m in METRICS),
    ]
    for m in methods:
        cells = "".join(f"{res[m][s][k]:>9.3f}" for s in SUBSETS for k in METRICS)
        mark = " *" if m == default else ""
        lines.append(f"{m + mark:<22}{cells}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the benchmark and print the table; 0 on success."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="kind assignments (seeds 42, 43, ...)")
    ap.add_argument("--alpha", type=float, default=0.5, help="caption weight of a document")
    ap.add_argument("--pool", type=int, default=100, help="candidates per kind before fusion")
    ap.add_argument("--data", default=str(COCO), help="the [2, n, d] image/caption array")
    ap.add_argument("--json", metavar="OUT.json", help="also write every number as JSON")
    args = ap.parse_args(argv)
    arr = np.load(args.data)
    default = getattr(fusion, "DEFAULT_METHOD", None)
    methods = list(fusion.METHOD_NAMES) + [m for m in LOCAL_METHODS if m not in fusion.METHOD_NAMES]
    t0 = time.perf_counter()
    runs, counts = [], {}
    for i in range(args.seeds):
        s = three_kind_set(arr, 42 + i, args.alpha)
        pool = capped_pool(s["labels"], args.pool)
        runs.append(evaluate_set(s, methods, pool))
        counts = {"all": int(s["gold_kind"].size)}
        counts |= {k: int((s["gold_kind"] == k).sum()) for k in SUBSETS[1:]}
    res = average(runs)
    print(
        f"three-kind COCO corpus: {arr.shape[1]} pairs 1:1:1 text/image/multimodal, "
        f"alpha {args.alpha}; queries = captions of the image and multimodal pairs; mean over "
        f"{args.seeds} seed(s) from 42; pool {args.pool} per kind; {time.perf_counter() - t0:.1f} s"
    )
    print(format_table(res, methods, counts, default))
    if default:
        print(f"* mmgap's default method ({default})")
    if args.json:
        write_json(args.json, {"settings": vars(args), "counts": counts, "results": res})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
