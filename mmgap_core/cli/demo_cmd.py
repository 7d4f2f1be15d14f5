"""`mmgap demo`: index, calibrate and search end to end on an embedded Chroma in a temporary folder."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

DEMO_TEXTS = [
    "A tabby cat sleeping on a windowsill in the afternoon sun.",
    "Freshly brewed coffee in a white cup on a saucer.",
    "An astronaut in a white spacesuit holding a flag.",
    "A photographer with a vintage camera on a tripod.",
    "Red, ripe tomatoes at a farmers market stall.",
    "A rocket lifting off from the launch pad at dawn.",
    "A cup of espresso next to a croissant on a cafe table.",
    "A kitten playing with a ball of yarn.",
    "The city skyline reflected in a river at night.",
    "A bowl of fresh fruit: apples, bananas and grapes.",
    "A man in a coat standing in a park, looking through a camera.",
    "A golden retriever running on the beach.",
    "Snow-covered mountains under a clear blue sky.",
    "A bicycle leaning against a brick wall.",
    "A plate of spaghetti with tomato sauce and basil.",
    "A lighthouse on a rocky coast during a storm.",
]
DEMO_QUERIES = ["a photo of a cat", "a cup of coffee", "an astronaut in space", "a person holding a camera"]


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: index, calibrate, search (raw vs calibrated)",
        description="Index a small mixed corpus into an embedded Chroma in a temporary folder, calibrate, "
        "and show raw versus calibrated rankings. Uses ViT-B-32/laion2b_s34b_b79k when its weights can be "
        "loaded; otherwise (offline) it says so and uses simulator embeddings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="laion2b_s34b_b79k")
    p.add_argument("--model-config", help="open_clip model-config JSON for a custom architecture")
    p.add_argument("--simulated", action="store_true", help="skip the model: use simulator embeddings")
    p.add_argument("--keep", metavar="DIR", help="build the demo store in DIR and keep it")
    p.add_argument("-k", type=int, default=8, help="results per ranking")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..encoders.base import WeightsUnavailableError
    from ..store.chroma import ChromaStore

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mmgap-demo-"))
    try:
        encoder = None
        unreachable = None if args.simulated else _hub_unreachable(args.model, args.pretrained)
        if unreachable:
            print(f"pretrained weights {args.model}/{args.pretrained} cannot be loaded here ({unreachable}); "
                  "using simulator embeddings instead.")
        elif not args.simulated:
            try:
                from ..encoders.open_clip import OpenClipEncoder

                encoder = OpenClipEncoder(args.model, args.pretrained, model_config=args.model_config)
            except (WeightsUnavailableError, ImportError) as exc:
                reason = " ".join(str(exc).split())[:200]
                print(f"pretrained weights {args.model}/{args.pretrained} cannot be loaded here ({reason}); "
                      "using simulator embeddings instead.")
        store = ChromaStore.persistent(folder / "db", "demo")
        print(f"embedded Chroma store in {folder / 'db'}")
        if encoder is None:
            demo_simulated(store, args.k)
        else:
            demo_model(store, encoder, folder, args.k)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def _hub_unreachable(model: str, pretrained: str) -> str | None:
    """Why the tag's weights certainly cannot be fetched now (not cached, hub host unresolvable), else None.

    Saves the user a minute of download retries on a machine without network.
    """
    import os
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    if os.path.isfile(pretrained) or os.environ.get("HF_HUB_OFFLINE"):
        return None  # a local file, or offline mode: the encoder itself answers at once
    try:
        from ..encoders.open_clip import _find_cached_weights, oc_pretrained

        cfg = oc_pretrained.get_pretrained_cfg(model, pretrained)
        if not cfg or _find_cached_weights(cfg, None)[0] is not None:
            return None
    except ImportError:
        return None
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(socket.getaddrinfo, "huggingface.co", 443).result(timeout=3)
    except (OSError, FutureTimeout) as exc:
        return f"not cached, and no network to download them: {type(exc).__name__} {exc}".strip()
    finally:
        pool.shutdown(wait=False)
    return None


def _demo_images(folder: Path) -> list[Path]:
    """scikit-image's bundled photos when installed, plus a few generated pictures."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        from skimage import data as skdata

        for name in ("astronaut", "coffee", "chelsea", "camera", "rocket"):
            arr = getattr(skdata, name)()
            p = folder / f"{name}.png"
            Image.fromarray(arr).save(p)
            paths.append(p)
    except ImportError:
        pass
    for name, colour in (("red-circle", (220, 30, 30)), ("blue-square", (30, 60, 220))):
        img = Image.new("RGB", (128, 128), "white")
        draw = ImageDraw.Draw(img)
        if "circle" in name:
            draw.ellipse((24, 24, 104, 104), fill=colour)
        else:
            draw.rectangle((24, 24, 104, 104), fill=colour)
        p = folder / f"{name}.png"
        img.save(p)
        paths.append(p)
    return paths


def demo_model(store, encoder, folder: Path, k: int) -> None:
    from ..engine import RetrievalEngine
    from .store_cmds import describe_calibration, side_by_side

    engine = RetrievalEngine(store, encoder)
    images = _demo_images(folder / "images")
    report = engine.index(texts=DEMO_TEXTS, images=images, progress=False)
    print(f"model {encoder.model_id}: {report.summary().splitlines()[0]}")
    engine.calibrate(sample=len(DEMO_TEXTS), progress=False)
    print(describe_calibration(engine))
    for q in DEMO_QUERIES:
        raw, cal = engine.compare(q, k=k)
        print(f"\nquery: {q!r}")
        print(side_by_side(raw, cal))


def demo_simulated(store, k: int) -> None:
    import numpy as np

    from ..engine import RetrievalEngine
    from ..simulator import simulate
    from .store_cmds import describe_calibration

    data = simulate("clip-like")
    rows = np.arange(data.corpus.shape[0])
    model_id = f"simulator:{data.profile}"
    for m in ("text", "image"):
        sel = rows[data.modalities == m]
        store.add(
            m,
            [f"sim-{r}" for r in sel],
            data.corpus[sel],
            documents=[f"simulated text #{r}" for r in sel] if m == "text" else None,
            uris=[f"sim://image/{r}" for r in sel] if m == "image" else None,
            metadatas=[{"row": int(r)} for r in sel],
            model_id=model_id,
        )
    print(f"indexed {data.corpus.shape[0]} simulated items "
          f"({int((data.modalities == 'text').sum())} text, {int((data.modalities == 'image').sum())} image), "
          f"profile {data.profile!r}")
    engine = RetrievalEngine(store, None)
    engine.calibrate(data.queries, query_modality=data.query_modality, progress=False)
    print(describe_calibration(engine))

    relevant = {int(q): int(r) for q, r, _ in data.qrels}
    cross = [q for q in range(data.queries.shape[0]) if data.modalities[relevant[q]] != data.query_modality]
    same = [q for q in range(data.queries.shape[0]) if data.modalities[relevant[q]] == data.query_modality]

    def found(res, q):
        return any(h.metadata.get("row") == relevant[q] for h in res.hits)

    for q in cross[:2] + same[:1]:
        raw, cal = engine.compare(embedding=data.queries[q], query_modality=data.query_modality, k=k)
        target = f"sim-{relevant[q]}"
        print(f"\nsimulated {data.query_modality} query #{q}; its relevant item is {target} "
              f"({data.modalities[relevant[q]]})")
        print(_side_by_side_marked(raw, cal, target))

    n_eval = min(len(cross), 150)
    for name, group in (("cross-modal", cross[:n_eval]), ("same-modal", same[:n_eval])):
        hits_raw = hits_cal = 0
        for q in group:
            raw, cal = engine.compare(embedding=data.queries[q], query_modality=data.query_modality, k=10)
            hits_raw += found(raw, q)
            hits_cal += found(cal, q)
        print(f"{name} queries with the relevant item in the top 10: raw {hits_raw}/{len(group)}, "
              f"calibrated {hits_cal}/{len(group)}")


def _side_by_side_marked(raw, cal, target: str) -> str:
    from .store_cmds import side_by_side

    lines = side_by_side(raw, cal).splitlines()
    out = lines[:2]
    for i, line in enumerate(lines[2:-1]):
        a = raw.hits[i].id == target if i < len(raw) else False
        b = cal.hits[i].id == target if i < len(cal) else False
        mark = ("  <- relevant (raw)" if a else "") + ("  <- relevant (calibrated)" if b else "")
        out.append(line + mark)
    out.append(lines[-1])
    return "\n".join(out)
