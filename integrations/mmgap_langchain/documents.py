"""Engine hits as LangChain ``Document`` s: what an LLM reads, and what stays in metadata.

An image's ``page_content`` is always short text an LLM can take (its caption, title or path),
never the image itself: LangChain's ``Chroma.add_images`` keeps every image as a base64 document,
about 600 KB each. The image's bytes go into ``metadata["image_base64"]`` only when asked for.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from langchain_core.documents import Document

from mmgap_core.results import Hit

__all__ = ["CAPTION_KEYS", "IMAGE_BASE64_KEY", "hit_to_document"]

logger = logging.getLogger(__name__)

#: Metadata keys whose value becomes an image hit's ``page_content``, first match wins.
CAPTION_KEYS = ("caption", "title", "alt_text", "alt", "description")
#: Metadata key of an image's base64 file bytes (with ``include_image_bytes=True``).
IMAGE_BASE64_KEY = "image_base64"

# A stored document that is base64 data rather than text: long, no spaces, base64 alphabet only.
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_BASE64_MIN_CHARS = 64
# Leading base64 characters of image file signatures, for images stored without a file name.
_BASE64_SIGNATURES = (
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
    ("Qk", "image/bmp"),
)


def _is_base64(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) >= _BASE64_MIN_CHARS
        and _BASE64.fullmatch(value) is not None
    )


def _readable_text(value: Any) -> str | None:
    """``value`` if it is non-blank text an LLM can read (not base64 data), else ``None``."""
    if isinstance(value, str) and value.strip() and not _is_base64(value):
        return value
    return None


def _image_page_content(hit: Hit) -> str:
    """The stored document if it is text, else a caption-like metadata value, else the URI."""
    text = _readable_text(hit.text)
    if text is not None:
        return text
    for key in CAPTION_KEYS:
        text = _readable_text(hit.metadata.get(key))
        if text is not None:
            return text
    return hit.uri or f"image {hit.id}"


def _image_mime_type(hit: Hit) -> str | None:
    stored = hit.metadata.get("mime_type")
    if isinstance(stored, str) and stored:
        return stored
    if hit.uri:
        guessed = mimetypes.guess_type(hit.uri)[0]
        if guessed:
            return guessed
    if _is_base64(hit.text):
        for prefix, mime in _BASE64_SIGNATURES:
            if hit.text.startswith(prefix):
                return mime
    return None


def _image_base64(hit: Hit) -> str | None:
    """The image's file bytes as base64: the stored document, a data URI, or the local file."""
    if _is_base64(hit.text):
        return hit.text
    if not hit.uri:
        return None
    parsed = urlparse(hit.uri)
    if parsed.scheme == "data":
        head, _, data = hit.uri.partition(",")
        return data if head.endswith(";base64") else None
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif len(parsed.scheme) > 1:  # http(s) and the like: not fetched (a drive letter is 1 char)
        return None
    else:
        path = Path(hit.uri)
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as exc:
        logger.warning("image %s: cannot read %s for its bytes (%s)", hit.id, path, exc)
        return None


def hit_to_document(hit: Hit, *, include_image_bytes: bool = False) -> Document:
    """One engine hit as a LangChain ``Document``.

    Parameters
    ----------
    hit : Hit
        A hit of ``RetrievalEngine.search``.
    include_image_bytes : bool, default False
        Add the image's file bytes, base64-encoded, as ``metadata["image_base64"]`` (for a
        multimodal LLM). They come from the stored document (LangChain's ``add_images``
        layout), a ``data:`` URI or the local file; a remote URL is not fetched.

    Returns
    -------
    Document
        ``id`` is the store id. ``page_content`` is:

        * a text hit's text;
        * an image hit's stored document when that is text (not base64), else its first
          caption-like metadata value (:data:`CAPTION_KEYS`), else its URI, else
          ``"image <id>"``: never the image data;
        * a multimodal hit's text (the document's text part).

        ``metadata`` is the stored metadata plus ``modality``, ``relevance_score`` (in the
        fusion method's unit), ``raw_score`` (cosine), ``rank``, ``uri`` and ``mime_type``
        (``text/plain`` for text; for an image, or a multimodal hit's image, the stored
        ``mime_type``, else guessed from the URI or the base64 signature, else ``None``). These
        keys win over stored ones.
    """
    if hit.modality == "text":
        content = hit.text if hit.text is not None else ""
        mime = "text/plain"
        has_image = False
    else:
        # "image", "multimodal" (a text with its image), or any other image-bearing modality.
        content = _image_page_content(hit)  # the text part first, so a multimodal hit's text
        mime = _image_mime_type(hit)
        has_image = True
    metadata = dict(hit.metadata)
    metadata.pop(IMAGE_BASE64_KEY, None)
    metadata.update(
        modality=hit.modality,
        relevance_score=hit.score,
        raw_score=hit.raw_score,
        rank=hit.rank,
        uri=hit.uri,
        mime_type=mime,
    )
    if include_image_bytes and has_image:
        data = _image_base64(hit)
        if data is not None:
            metadata[IMAGE_BASE64_KEY] = data
    return Document(id=hit.id, page_content=content, metadata=metadata)
