"""`mmgap demo`: index, calibrate and search end to end on an embedded Chroma in a temporary folder."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from .store_cmds import hit_label, side_by_side

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
                reason = " ".join(str(exc).split())
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
        from ..encoders.weights import weights_available_offline

        if weights_available_offline(model, pretrained):
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
    from .store_cmds import describe_calibration

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
    from ..engine import RetrievalEngine
    from ..simulator import SimulatedEncoder
    from .store_cmds import describe_calibration

    encoder = SimulatedEncoder("clip-like")
    texts, images = encoder.corpus()
    engine = RetrievalEngine(store, encoder)
    report = engine.index(texts=texts, images=images, image_metadatas=[{"title": i.decode()} for i in images],
                          progress=False, batch_size=512)
    print(f"simulated corpus, profile {encoder.data.profile!r}: {report.summary().splitlines()[0]}")
    queries = encoder.queries()
    engine.calibrate(queries, progress=False)
    print(describe_calibration(engine))

    def target(q):
        return encoder.relevant_row(q)

    def is_image(q):
        return encoder.data.modalities[target(q)] == "image"

    def found(res, q):
        return any(hit_label(h).endswith(f"#{target(q)}") for h in res.hits)

    cross = [q for q in queries if is_image(q)]
    same = [q for q in queries if not is_image(q)]
    for q in cross[:2] + same[:1]:
        raw, cal = engine.compare(q, k=k)
        print(f"\nquery {q!r}; its relevant item is {encoder.data.modalities[target(q)]} #{target(q)}")
        print(_side_by_side_marked(raw, cal, lambda h, q=q: hit_label(h).endswith(f"#{target(q)}")))

    n_eval = min(len(cross), len(same), 150)
    for name, group in (("cross-modal", cross[:n_eval]), ("same-modal", same[:n_eval])):
        hits_raw = hits_cal = 0
        for q in group:
            raw, cal = engine.compare(q, k=10)
            hits_raw += found(raw, q)
            hits_cal += found(cal, q)
        print(f"{name} queries with the relevant item in the top 10: raw {hits_raw}/{len(group)}, "
              f"calibrated {hits_cal}/{len(group)}")


def _side_by_side_marked(raw, cal, is_relevant) -> str:
    lines = side_by_side(raw, cal).splitlines()
    out = lines[:2]
    for i, line in enumerate(lines[2:-1]):
        a = i < len(raw) and is_relevant(raw.hits[i])
        b = i < len(cal) and is_relevant(cal.hits[i])
        mark = ("  <- relevant (raw)" if a else "") + ("  <- relevant (calibrated)" if b else "")
        out.append(line + mark)
    out.append(lines[-1])
    return "\n".join(out)
