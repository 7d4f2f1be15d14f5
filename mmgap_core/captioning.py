"""Image captioning as an alternative to cross-modal retrieval: index each image as its caption.

A :class:`Captioner` turns images into text; :func:`caption_corpus` applies one to a benchmark's
image corpus so images can be retrieved text-to-text (the "caption everything" baseline that
sidesteps the modality gap). :class:`MetadataCaptioner` is the trivial captioner that reuses the
image's own title / metadata. Model-based captioners can decode pixels with :func:`open_image`
(Pillow is imported only there).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Union, runtime_checkable

from .datasets.base import ImageRef

if TYPE_CHECKING:
    from PIL import Image

ImageLike = Union[ImageRef, str, os.PathLike, bytes, "Image.Image"]
"""An image given as a corpus reference, a file path, encoded bytes, or a PIL image."""


@runtime_checkable
class Captioner(Protocol):
    """Anything with a ``name`` and a batch ``caption`` method returning one string per image."""

    name: str

    def caption(self, images: Sequence[ImageLike]) -> list[str]:
        """Return one caption per input image, in order."""
        ...


def open_image(image: ImageLike) -> Image.Image:
    """Decode an image into an RGB PIL image (Pillow is imported lazily).

    Parameters
    ----------
    image : ImageLike
        An :class:`ImageRef`, a file path, encoded bytes or a PIL image.

    Returns
    -------
    PIL.Image.Image
        An RGB image.

    Raises
    ------
    TypeError
        ``image`` is none of the accepted types.
    OSError
        The file cannot be read, or Pillow cannot decode it.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, ImageRef):
        data = image.load_bytes()
    elif isinstance(image, bytes):
        data = image
    elif isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
    else:
        raise TypeError(f"cannot open an image from {type(image).__name__}")
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def _image_key(image: ImageLike) -> str:
    """Return the id an image is looked up by: ``ImageRef.id``, else the file name's stem."""
    if isinstance(image, ImageRef):
        return image.id
    if isinstance(image, (str, os.PathLike)):
        return Path(image).stem
    raise TypeError(
        "MetadataCaptioner needs an ImageRef, an image id or a file path, "
        f"got {type(image).__name__}"
    )


class MetadataCaptioner:
    """Captions an image with its own metadata instead of looking at pixels.

    Parameters
    ----------
    source : mapping, callable or None, optional
        Where the caption comes from: ``None``, the ``ImageRef.title``; a mapping
        ``image id -> caption`` (ids are ``ImageRef.id``, or a path's file stem); a callable
        ``image -> caption``.
    name : str, default "metadata"
        The captioner's name (reported in results).

    Raises
    ------
    TypeError
        ``source`` is none of the above.

    Notes
    -----
    :meth:`caption` raises ``ValueError`` when an image has no caption (id not in the mapping,
    empty title or result) and ``TypeError`` for an input that carries no id (bytes or a PIL
    image) with a non-callable source.
    """

    def __init__(
        self,
        source: Mapping[str, str] | Callable[[ImageLike], str] | None = None,
        *,
        name: str = "metadata",
    ):
        if source is not None and not isinstance(source, Mapping) and not callable(source):
            raise TypeError(
                f"source must be None, a mapping id -> caption or a callable, "
                f"got {type(source).__name__}"
            )
        self.source = source
        self.name = name

    def _caption_one(self, image: ImageLike) -> str:
        if callable(self.source) and not isinstance(self.source, Mapping):
            text = self.source(image)
            where = f"the callable for image {_describe(image)}"
        elif isinstance(self.source, Mapping):
            key = _image_key(image)
            if key not in self.source:
                raise ValueError(
                    f"MetadataCaptioner {self.name!r}: no caption for image id {key!r}"
                )
            text = self.source[key]
            where = f"the mapping entry for image id {key!r}"
        else:
            if not isinstance(image, ImageRef):
                raise TypeError(
                    "MetadataCaptioner without a source reads ImageRef.title; "
                    f"got {type(image).__name__}"
                )
            text = image.title
            where = f"the title of image {image.id!r}"
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"MetadataCaptioner {self.name!r}: {where} is empty or not a string")
        return text.strip()

    def caption(self, images: Sequence[ImageLike]) -> list[str]:
        """Caption each image from its metadata.

        Parameters
        ----------
        images : sequence of ImageLike
            The images.

        Returns
        -------
        list of str
            One caption per image, in order.
        """
        return [self._caption_one(image) for image in images]

    def __repr__(self) -> str:
        kind = "title" if self.source is None else type(self.source).__name__
        return f"MetadataCaptioner(name={self.name!r}, source={kind})"


def _describe(image: ImageLike) -> str:
    if isinstance(image, ImageRef):
        return repr(image.id)
    if isinstance(image, (str, os.PathLike)):
        return repr(str(image))
    return f"<{type(image).__name__}>"


def caption_corpus(
    images: Mapping[str, ImageRef], captioner: Captioner, *, batch_size: int = 32
) -> dict[str, str]:
    """Caption every corpus image.

    Parameters
    ----------
    images : mapping of str to ImageRef
        Image id -> image; the captioner receives the :class:`ImageRef` objects in batches.
    captioner : Captioner
        Anything with a ``name`` and a batch ``caption`` method.
    batch_size : int, default 32
        Images per ``caption`` call.

    Returns
    -------
    dict of str to str
        Image id -> caption text, in the input order.

    Raises
    ------
    TypeError
        ``captioner`` does not follow the :class:`Captioner` protocol.
    ValueError
        Bad ``batch_size``, or the captioner returned the wrong number of captions or an empty
        or non-string caption (the message names the image id).
    """
    if not isinstance(captioner, Captioner):
        raise TypeError(
            f"captioner must have a 'name' and a 'caption(images)' method, "
            f"got {type(captioner).__name__}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = list(images)
    captions: dict[str, str] = {}
    for start in range(0, len(ids), batch_size):
        batch_ids = ids[start : start + batch_size]
        result = list(captioner.caption([images[i] for i in batch_ids]))
        if len(result) != len(batch_ids):
            raise ValueError(
                f"captioner {captioner.name!r} returned {len(result)} captions "
                f"for {len(batch_ids)} images"
            )
        for image_id, text in zip(batch_ids, result):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"captioner {captioner.name!r} returned an empty caption for image {image_id!r}"
                )
            captions[image_id] = text
    return captions
