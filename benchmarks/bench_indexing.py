"""Image indexing throughput of ``RetrievalEngine.index`` against the bare open_clip forward pass.

Both sides see the SAME images in the SAME batches:

* bare: the images are decoded and preprocessed up front (not timed), stacked into batches, and
  only ``model.encode_image(batch)`` under ``torch.inference_mode()`` is timed;
* engine: ``engine.index(images=paths, batch_size=B)`` into an embedded
  ``chromadb.PersistentClient`` in a temp dir: reading and hashing each file, checking existing
  ids, decoding + preprocessing in the encoder's thread pool (pipelined with the forward pass), the
  forward pass, and the Chroma add.

Each repetition indexes into a fresh store (ids are content hashes, so a second run into the same
store would skip everything). Repetitions alternate bare / engine so both see the same machine load.
Goal: engine images/s >= 0.85 x bare images/s. The engine run is also split into its phases
(cProfile of one extra run, ``--profile``).

No downloads: the default model is a random-weight ViT-B-32 whose state_dict is saved to a local
checkpoint file in the temp dir and loaded with ``OpenClipEncoder("ViT-B-32", pretrained=<file>)``.

    python benchmarks/bench_indexing.py                          # ViT-B-32, 256 images, batch 32
    python benchmarks/bench_indexing.py --tiny --images 512      # the tests' tiny model (fast)
    python benchmarks/bench_indexing.py --model ViT-S-32 --images 128 --json out.json
    python benchmarks/bench_indexing.py --model mymodel --config path/mymodel.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO, data_dir, log


# ------------------------------------------------------------------------------------------ inputs
def make_images(root: Path, n: int, min_side: int, max_side: int, seed: int) -> list[Path]:
    """``n`` JPEG/PNG files (2/3 JPEG) of random sizes: gradients, noise and a few rectangles."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(0, 255, size=3)
        slope = rng.uniform(-0.6, 0.6, size=(3, 2))
        img = np.stack([base[c] + slope[c, 0] * xx + slope[c, 1] * yy for c in range(3)], axis=-1)
        img += rng.normal(0, rng.uniform(4, 30), size=img.shape)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(1, 6))):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            x1, y1 = (
                x0 + int(rng.integers(10, w // 2 + 11)),
                y0 + int(rng.integers(10, h // 2 + 11)),
            )
            draw.rectangle([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        if i % 3 == 2:
            path = root / f"img{i:05d}.png"
            pil.save(path, optimize=False)
        else:
            path = root / f"img{i:05d}.jpg"
            pil.save(path, quality=90)
        paths.append(path)
    return paths


def make_checkpoint(model_name: str, config: Path | None, out: Path, seed: int) -> Path:
    """Seeded random weights of ``model_name`` saved as a local checkpoint (no download)."""
    import open_clip
    import torch

    if config is not None:
        open_clip.add_model_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    torch.save(model.state_dict(), out)
    return out


# ------------------------------------------------------------------------------------------ timing
def bare_forward(encoder, batches) -> float:
    """Seconds for ``encode_image`` over the pre-built batches (the engine's forward pass)."""
    import torch

    model = encoder._model
    t0 = time.perf_counter()
    with torch.inference_mode():
        for pixels in batches:
            model.encode_image(pixels)
    return time.perf_counter() - t0


def engine_index(encoder, client, store_name: str, paths, batch_size: int):
    from mmgap_core.engine import RetrievalEngine
    from mmgap_core.store.chroma import ChromaStore

    engine = RetrievalEngine(ChromaStore(client, store_name), encoder)
    t0 = time.perf_counter()
    report = engine.index(images=paths, batch_size=batch_size, progress=False)
    elapsed = time.perf_counter() - t0
    if report.n_added != len(paths):
        raise SystemExit(f"engine.index added {report.n_added} of {len(paths)}: {report.summary()}")
    return elapsed


def phase_costs(encoder, paths, batch_size: int) -> dict[str, float]:
    """Single-threaded cost of each per-image step, for the breakdown (seconds for all images)."""
    from mmgap_core.encoders.image_decoding import decode_image
    from mmgap_core.results import content_id

    t0 = time.perf_counter()
    datas = [p.read_bytes() for p in paths]
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    for d in datas:
        content_id("image", d)
    t_hash = time.perf_counter() - t0
    t0 = time.perf_counter()
    imgs = [decode_image(p) for p in paths]
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    for im in imgs:
        encoder._preprocess(im)
    t_pre = time.perf_counter() - t0
    return {"read_files": t_read, "sha256": t_hash, "decode": t_decode, "preprocess": t_pre}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="open_clip model-config JSON named <model>.json, for a custom architecture",
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="use the tests' tiny architecture (tests/_fixtures_clip.py TINY_CONFIG)",
    )
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--min-side", type=int, default=256)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=2, help="encoder decode threads")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's choice)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one extra engine run")
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument("--goal", type=float, default=0.85)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--tmp", type=Path, default=None, help="work dir (default: a temp dir, deleted)"
    )
    ap.add_argument(
        "--json", metavar="OUT", type=Path, default=None, help="write the results as JSON"
    )
    args = ap.parse_args(argv)
    if args.images < 1 or args.batch_size < 1 or args.repeats < 1:
        ap.error("--images, --batch-size and --repeats must be >= 1")

    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import chromadb
    import torch

    from mmgap_core.encoders.image_decoding import decode_image
    from mmgap_core.encoders.open_clip import OpenClipEncoder

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with data_dir(args.tmp, "mmgap-bench-index-") as tmp:
        model_name, config = args.model, args.config
        if args.tiny:
            sys.path.insert(0, str(REPO))
            from tests._fixtures_clip import TINY_CONFIG, TINY_MODEL_NAME

            model_name, config = TINY_MODEL_NAME, tmp / f"{TINY_MODEL_NAME}.json"
            config.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
        log(f"saving random {model_name} weights to a local checkpoint")
        ckpt = make_checkpoint(model_name, config, tmp / f"{model_name}-random.pt", args.seed)
        encoder = OpenClipEncoder(
            model_name,
            pretrained=str(ckpt),
            model_config=config,
            device="cpu",
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
        log(f"writing {args.images} images ({args.min_side}-{args.max_side} px)")
        paths = make_images(tmp / "images", args.images, args.min_side, args.max_side, args.seed)
        total_mb = sum(p.stat().st_size for p in paths) / 2**20

        log("pre-decoding for the bare forward pass")
        tensors = [encoder._preprocess(decode_image(p)) for p in paths]
        batches = [
            torch.stack(tensors[s : s + args.batch_size])
            for s in range(0, len(tensors), args.batch_size)
        ]
        phases = phase_costs(encoder, paths, args.batch_size)

        client = chromadb.PersistentClient(path=str(tmp / "db"))
        log("warm-up")
        bare_forward(encoder, batches[:1])
        engine_index(encoder, client, "warmup", paths[: args.batch_size], args.batch_size)
        bare_s, engine_s = [], []
        for r in range(args.repeats):
            order = ("bare", "engine") if r % 2 == 0 else ("engine", "bare")
            for what in order:
                if what == "bare":
                    bare_s.append(bare_forward(encoder, batches))
                else:
                    engine_s.append(
                        engine_index(encoder, client, f"run{r}", paths, args.batch_size)
                    )
                log(
                    f"  repeat {r + 1}/{args.repeats} {what}: "
                    f"{(bare_s if what == 'bare' else engine_s)[-1]:.2f} s"
                )
        profile_text = None
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            engine_index(encoder, client, "profiled", paths, args.batch_size)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.profile_top)
            profile_text = s.getvalue()
        client.close()

    n = args.images
    bare_med, eng_med = statistics.median(bare_s), statistics.median(engine_s)
    result = {
        "model": model_name,
        "images": n,
        "image_mb": total_mb,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "bare_s": bare_s,
        "engine_s": engine_s,
        "bare_images_per_s": n / bare_med,
        "engine_images_per_s": n / eng_med,
        "ratio": bare_med / eng_med,
        "goal_ratio": args.goal,
        "single_thread_phase_s": phases,
    }
    result["goal_met"] = result["ratio"] >= args.goal
    print(
        f"\nindexing {n} images ({total_mb:.1f} MB, {args.min_side}-{args.max_side} px) with "
        f"{model_name}, batch {args.batch_size}, {args.num_workers} decode threads, "
        f"{result['torch_threads']} torch threads, {args.repeats} repeats (median)"
    )
    print(f"  {'path':28s} {'seconds':>9s} {'images/s':>9s}")
    print(f"  {'bare encode_image':28s} {bare_med:9.2f} {result['bare_images_per_s']:9.1f}")
    print(f"  {'engine.index':28s} {eng_med:9.2f} {result['engine_images_per_s']:9.1f}")
    verdict = "met" if result["goal_met"] else "MISSED"
    print(f"  ratio engine/bare images/s: {result['ratio']:.3f} (goal >= {args.goal}: {verdict})")
    print("  single-threaded cost of the per-image steps the bare pass skips (all images):")
    for k, v in phases.items():
        print(f"    {k:12s} {v:7.2f} s  ({1e3 * v / n:6.2f} ms/image)")
    if profile_text:
        print("\ncProfile of one engine.index run (tottime):")
        print(profile_text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
