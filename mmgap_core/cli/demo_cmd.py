"""``mmgap demo``: index, calibrate and search end to end on an embedded Chroma store.

The store is named ``demo``, in a temporary folder (or ``--keep DIR``). With real weights it indexes
a few texts and pictures with open_clip; where they cannot be loaded (offline) it says so and uses
simulator embeddings. Two runs print the same: the data, the calibration sample and the stores'
nearest-neighbour index are all deterministic.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from pathlib import Path

from ._common import CommandError, add_method_arg, method_epilog, method_unit, positive_int
from .search_cmd import hit_label, side_by_side

__all__ = ["DEMO_QUERIES", "DEMO_TEXTS", "register", "run"]

STORE_NAME = "demo"
#: One insertion thread, and a search beam wider than the demo corpus (the search is exact): every
#: ranking is the same on every run.
_DETERMINISTIC_HNSW = {
    "space": "cosine",
    "num_threads": 1,
    "ef_search": 4000,
    "ef_construction": 400,
}

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
DEMO_QUERIES = [
    "a photo of a cat",
    "a cup of coffee",
    "an astronaut in space",
    "a person holding a camera",
]


def register(sub) -> None:
    """Add ``demo`` to the CLI's subparsers ``sub``."""
    from ..factory import DEFAULT_MODEL, DEFAULT_PRETRAINED

    p = sub.add_parser(
        "demo",
        help="end-to-end demo: index, calibrate, search (raw vs calibrated)",
        description="Index a small mixed corpus into an embedded Chroma store named 'demo' in a "
        "temporary folder, calibrate it, and show the raw cosine ranking next to the calibrated "
        f"one. Uses {DEFAULT_MODEL}/{DEFAULT_PRETRAINED} when its weights can be loaded "
        "(downloaded once, or a local file with --pretrained PATH); otherwise it says so and "
        "uses simulator embeddings. The output is the same on every run.",
        epilog=method_epilog(),
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="open_clip model name for real CLIP embeddings",
    )
    p.add_argument(
        "--pretrained",
        default=DEFAULT_PRETRAINED,
        metavar="TAG|PATH",
        help="pretrained tag of --model (downloaded once), or a local checkpoint file",
    )
    p.add_argument(
        "--model-config", metavar="PATH", help="open_clip model-config JSON for a custom model"
    )
    p.add_argument(
        "--simulated", action="store_true", help="skip the model: use simulator embeddings"
    )
    add_method_arg(p, "fusion method of the calibrated ranking")
    p.add_argument(
        "--keep", metavar="DIR", help="build the store in DIR/db and keep it (to query it after)"
    )
    p.add_argument("-k", type=positive_int, default=8, help="results per ranking")
    p.set_defaults(func=run)


def run(args) -> int:
    """``mmgap demo``."""
    from ..factory import open_store

    if args.keep and Path(args.keep).exists() and not Path(args.keep).is_dir():
        raise CommandError(f"--keep {args.keep} is a file; give a folder")
    encoder, reason = (None, None) if args.simulated else _load_encoder(args)
    if reason:
        print(
            f"pretrained weights {args.model}/{args.pretrained} cannot be loaded here ({reason}); "
            "using simulator embeddings instead."
        )
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mmgap-demo-"))
    try:
        store = _deterministic_store(open_store(folder / "db", name=STORE_NAME))
        if args.keep:
            print(f"embedded Chroma store {STORE_NAME!r} in {folder / 'db'} (kept)")
        else:
            print(
                f"embedded Chroma store {STORE_NAME!r} in a temporary folder (removed at the end; "
                "--keep DIR keeps it)"
            )
        _say_method(args.method)
        if encoder is None:
            demo_simulated(store, args.k, args.method)
            print(_real_weights_hint(args))
        else:
            demo_model(store, encoder, folder, args.k, args.method)
        if args.keep:
            print(_keep_commands(args, folder / "db", encoder is None))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def _load_encoder(args):
    """(open_clip encoder, None), or (None, why its weights cannot be loaded here)."""
    from ..encoders.base import WeightsUnavailableError
    from ..factory import weights_problem

    problem = weights_problem(args.model, args.pretrained)
    if problem:
        return None, problem
    try:
        from ..encoders.open_clip import OpenClipEncoder

        return OpenClipEncoder(args.model, args.pretrained, model_config=args.model_config), None
    except (WeightsUnavailableError, ImportError) as exc:
        return None, " ".join(str(exc).split())


def _deterministic_store(store):
    """``store`` with its collections made for a single-threaded HNSW build (reproducible graphs).

    The collections are created first, then recorded by a new handle (``modalities=``), which
    finds them and keeps their configuration.
    """
    for modality in ("image", "text"):
        store.client.get_or_create_collection(
            store.collection_name(modality),
            embedding_function=None,
            configuration={"hnsw": dict(_DETERMINISTIC_HNSW)},
            metadata={"mmgap_store": store.name, "mmgap_modality": modality},
        )
    return type(store)(store.client, store.name, modalities=("image", "text"))


def _say_method(method: str) -> None:
    from ..fusion import METHODS

    print(
        f"calibrated ranking: {method}: {METHODS[method].summary}. Its scores are "
        f"{method_unit(method)}; the raw ranking's are cosines."
    )


def _real_weights_hint(args) -> str:
    from ..factory import DEFAULT_MODEL, DEFAULT_PRETRAINED

    return (
        "\nThese were simulator embeddings. For real CLIP embeddings run `mmgap demo` once online "
        f"(it downloads {DEFAULT_MODEL}/{DEFAULT_PRETRAINED}, about 600 MB), or give a local "
        f"checkpoint: `mmgap demo --model {DEFAULT_MODEL} --pretrained "
        "PATH/open_clip_pytorch_model.bin`."
    )


def _keep_commands(args, db: Path, simulated: bool) -> str:
    """The exact commands that query the kept store."""
    where = f"--db {shlex.quote(str(db))} --name {STORE_NAME}"
    if simulated:
        query, model = "simulated query #3", ""
    else:
        query = DEMO_QUERIES[0]
        model = f" --model {shlex.quote(args.model)}"
        pretrained = args.pretrained
        if Path(pretrained).is_file():
            pretrained = str(Path(pretrained).resolve())
        model += f" --pretrained {shlex.quote(pretrained)}"
        if args.model_config:
            model += f" --model-config {shlex.quote(str(Path(args.model_config).resolve()))}"
    q = shlex.quote(query)
    lines = [
        f"\nThe store {STORE_NAME!r} is kept in {db}. Query it with:",
        f"  mmgap search {q} {where}{model}",
        f"  mmgap search {q} --compare --method {args.method} {where}{model}",
        f"  mmgap inspect {where}",
    ]
    if simulated:
        lines.append("(simulator stores answer simulated queries only: 'simulated query #0' ...)")
    return "\n".join(lines)


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


def demo_model(store, encoder, folder: Path, k: int, method: str) -> None:
    """Index the demo texts and pictures with ``encoder``, calibrate, compare rankings."""
    from ..engine import RetrievalEngine
    from .calibrate_cmd import describe_calibration

    engine = RetrievalEngine(store, encoder)
    images = _demo_images(folder / "images")
    report = engine.index(texts=DEMO_TEXTS, images=images, progress=False)
    print(f"model {encoder.model_id}: {report.summary().splitlines()[0]}")
    engine.calibrate(sample=len(DEMO_TEXTS), progress=False)
    print(describe_calibration(engine))
    for q in DEMO_QUERIES:
        raw, cal = engine.compare(q, k=k, method=method)
        print(f"\nquery: {q!r}")
        print(side_by_side(raw, cal))


def demo_simulated(store, k: int, method: str) -> None:
    """Index a simulated corpus, calibrate, compare rankings, and count the relevant items found."""
    from ..engine import RetrievalEngine
    from ..simulator import SimulatedEncoder
    from .calibrate_cmd import describe_calibration

    encoder = SimulatedEncoder("clip-like")
    texts, images = encoder.corpus()
    engine = RetrievalEngine(store, encoder)
    report = engine.index(
        texts=texts,
        images=images,
        image_metadatas=[{"title": i.decode()} for i in images],
        progress=False,
        batch_size=512,
    )
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
        raw, cal = engine.compare(q, k=k, method=method)
        kind = encoder.data.modalities[target(q)]
        print(f"\nquery {q!r}; its relevant item is {kind} #{target(q)}")
        print(_side_by_side_marked(raw, cal, lambda h, q=q: hit_label(h).endswith(f"#{target(q)}")))

    n_eval = min(len(cross), len(same), 150)
    for name, group in (("cross-modal", cross[:n_eval]), ("same-modal", same[:n_eval])):
        hits_raw = hits_cal = 0
        for q in group:
            raw, cal = engine.compare(q, k=10, method=method)
            hits_raw += found(raw, q)
            hits_cal += found(cal, q)
        print(
            f"{name} queries with the relevant item in the top 10: raw {hits_raw}/{len(group)}, "
            f"{method} {hits_cal}/{len(group)}"
        )


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
