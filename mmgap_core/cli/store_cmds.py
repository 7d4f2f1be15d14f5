"""`mmgap index | calibrate | search | inspect`: the store commands.

``index`` lives here; ``calibrate``, ``search`` and ``inspect`` have their own modules, and the
options they share (store connection, model) are in ``_store_args``.
"""

from __future__ import annotations

from pathlib import Path

from ._common import CommandError, positive_int
from ._store_args import add_store_args, open_engine_for
from .calibrate_cmd import describe_calibration  # noqa: F401 - re-exported (notebook)
from .search_cmd import hit_label, side_by_side  # noqa: F401 - re-exported (demo, notebook)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
TEXT_SUFFIXES = {".txt", ".md"}


def register(sub) -> None:
    """Add ``index``, ``calibrate``, ``search`` and ``inspect`` to the CLI's subparsers ``sub``."""
    from . import calibrate_cmd, inspect_cmd, search_cmd

    p = sub.add_parser(
        "index",
        help="index folders/files of images, texts and multimodal (text+image) documents",
        description="Index images (jpg/png/...), texts (.txt, .md: one item per file) and .jsonl "
        "records (one per line: a 'text' field, an 'image' field (a path relative to the .jsonl "
        "file), or both, which makes a multimodal document; other fields are metadata) from files "
        "and folders. Bad files and lines are skipped with a reason naming file:line. Ids are "
        "content hashes: indexing again adds only what is new. The store is created on first use.",
    )
    p.add_argument("paths", nargs="+", help="files or folders (searched recursively)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="items embedded and written at a time (lower it if memory runs short)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        help="text weight of multimodal documents, embedded as normalise(alpha * text + "
        "(1 - alpha) * image); recorded in the store, which refuses another "
        "(default: the store's, else 0.5)",
    )
    p.add_argument(
        "--follow-links",
        action="store_true",
        help="follow symbolic links and .jsonl image paths that lead outside the folder given "
        "(by default they are listed as skipped)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, no per-item skip lines")
    add_store_args(p)
    p.set_defaults(func=run_index)

    calibrate_cmd.register(sub)
    search_cmd.register(sub)
    inspect_cmd.register(sub)


# ---------------------------------------------------------------------------- index
def collect_inputs(paths, *, follow_links: bool = False):
    """Texts, images and multimodal documents in ``paths`` (see :mod:`mmgap_core.index_inputs`).

    Returns
    -------
    mmgap_core.index_inputs.IndexInputs
        The items, and the files and lines skipped with a reason.
    """
    from ..index_inputs import collect_inputs as collect

    return collect(paths, follow_links=follow_links)


def run_index(args) -> int:
    """``mmgap index``: collect the inputs, index them, print the counts and the real skips."""
    from ..encoders.base import check_alpha

    _check_paths(args.paths)
    if args.alpha is not None:
        check_alpha(args.alpha)  # before the model loads
    found = collect_inputs(args.paths, follow_links=args.follow_links)
    if not found.n_items and not found.problems:
        raise ValueError(
            f"nothing to index in {args.paths}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
            "or texts (.txt, .md, .jsonl)"
        )
    engine = open_engine_for(args, create=True)  # the store is made after the model loads
    report = engine.index(
        found.texts,
        found.images,
        found.documents,
        text_sources=found.text_sources,
        text_metadatas=found.text_metadatas,
        image_sources=found.image_sources,
        image_metadatas=found.image_metadatas,
        document_sources=found.document_sources,
        document_metadatas=found.document_metadatas,
        alpha=args.alpha,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    report.skipped.extend(found.problems)
    print(report.summary() if not args.quiet else report.summary().splitlines()[0])
    if found.claimed and not args.quiet:
        print(f"  {found.claimed} image files belong to .jsonl records: indexed with them only")
    counts = engine.store.counts()
    held = ", ".join(f"{n} {m}" for m, n in sorted(counts.items()) if n) or "nothing"
    print(f"store {args.name!r} now holds {held}")
    if not engine.is_calibrated:
        print("next: run `mmgap calibrate` so that search can rank every modality together")
    return 0


def _check_paths(paths) -> None:
    """A path that does not exist is a typo: exit 2 before anything is loaded or created."""
    missing = [p for p in paths if not Path(p).exists() and not Path(p).is_symlink()]
    if missing:
        raise CommandError(f"no such file or folder: {', '.join(missing)}")
