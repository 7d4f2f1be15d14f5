"""Input checks and the image-decoding pipeline shared by encoder backends (no torch needed).

Texts are checked up front; images are decoded and preprocessed in worker threads, one batch
ahead of the model, so decoding overlaps the forward pass. Each item either yields its
preprocessed pixels or a reason it was skipped, so one bad item never aborts a corpus.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mmgap_core.encoders.base import ImageInput
from mmgap_core.encoders.image_decoding import (
    DecodeLimits,
    ImageSkip,
    decode_image,
    describe_source,
)

__all__ = [
    "as_item_sequence",
    "check_batch_size",
    "prepare_image",
    "prepared_batches",
    "strict_error",
    "text_failure",
]

#: One prepared item: (input position, preprocessed pixels or None, skip reason or None).
Prepared = tuple[int, Any, "str | None"]


def check_batch_size(batch_size: Any, name: str) -> int:
    """``batch_size`` if it is a positive int (not a bool), else ``ValueError`` naming ``name``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{name}: expected a positive int, got {batch_size!r}")
    return batch_size


def text_failure(text: Any) -> str | None:
    """Why ``text`` cannot be embedded (not a str, empty), or None."""
    if not isinstance(text, str):
        return f"not a string (got {type(text).__name__})"
    if not text.strip():
        return "empty or whitespace-only text"
    return None


def as_item_sequence(items: Any, name: str, single_hint: str) -> Sequence[Any]:
    """``items`` as a sequence; a lone str/bytes/path is a ``ValueError`` citing ``single_hint``.

    Parameters
    ----------
    items : iterable
        The batch.
    name : str
        Argument name for messages.
    single_hint : str
        The single-item method to suggest.

    Returns
    -------
    Sequence
    """
    if isinstance(items, (str, bytes, bytearray, os.PathLike)):
        raise ValueError(
            f"{name}: expected a sequence of items, got a single {type(items).__name__}; "
            f"wrap it in a list or use {single_hint}"
        )
    if not isinstance(items, Sequence):
        try:
            items = list(items)
        except TypeError as exc:
            raise ValueError(f"{name}: expected a sequence, got {type(items).__name__}") from exc
    return items


def strict_error(kind: str, failures: dict[int, str]) -> ValueError:
    """The ``strict=True`` error: how many items failed, and the first five reasons."""
    shown = "; ".join(f"[{pos}] {reason}" for pos, reason in list(failures.items())[:5])
    more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
    return ValueError(f"strict=True: {len(failures)} {kind} could not be embedded: {shown}{more}")


def prepare_image(
    item: ImageInput, preprocess: Callable[[Any], Any], limits: DecodeLimits
) -> tuple[Any, str | None]:
    """Decode and preprocess one item: ``(pixels, None)`` or ``(None, reason)``.

    Parameters
    ----------
    item : ImageInput
        A path, encoded bytes or a PIL image.
    preprocess : callable
        The model's transform from an RGB PIL image to pixels.
    limits : DecodeLimits
        How ``preprocess`` resizes, so decoding refuses what it would blow up.

    Returns
    -------
    tuple
    """
    try:
        img = decode_image(item, limits)
    except ImageSkip as exc:
        return None, str(exc)
    except Exception as exc:  # an unexpected decoder error must not abort the whole corpus
        return None, f"cannot decode image {describe_source(item)}: {type(exc).__name__}: {exc}"
    try:
        return preprocess(img), None
    except Exception as exc:
        return None, f"cannot preprocess image {describe_source(item)}: {type(exc).__name__}: {exc}"


def prepared_batches(
    images: Sequence[ImageInput],
    batch_size: int,
    preprocess: Callable[[Any], Any],
    limits: DecodeLimits,
    pool: ThreadPoolExecutor | None = None,
) -> Iterator[list[Prepared]]:
    """Yield prepared batches; with a pool, batch i+1 decodes while the caller runs batch i.

    Parameters
    ----------
    images : sequence of ImageInput
        The inputs, in order.
    batch_size : int
        Items per batch.
    preprocess : callable
        The model's image transform.
    limits : DecodeLimits
        Decoding bounds (see :func:`prepare_image`).
    pool : ThreadPoolExecutor, optional
        Worker threads; None decodes inline.

    Yields
    ------
    list of (position, pixels or None, reason or None)
    """
    n = len(images)
    if pool is None:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield [(p, *prepare_image(images[p], preprocess, limits)) for p in range(start, stop)]
        return
    pending: list[tuple[int, Future]] | None = None
    for start in range(0, n, batch_size):
        submitted = [
            (p, pool.submit(prepare_image, images[p], preprocess, limits))
            for p in range(start, min(start + batch_size, n))
        ]
        if pending is not None:
            yield [(p, *fut.result()) for p, fut in pending]
        pending = submitted
    if pending is not None:
        yield [(p, *fut.result()) for p, fut in pending]
