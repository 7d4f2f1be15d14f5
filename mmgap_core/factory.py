"""Backend wiring: open a Chroma store and the open_clip encoder it was built with, as an engine.

This is the only core module that names the backends (Chroma, open_clip); they load on first use,
so importing it costs nothing. Everything else in the core works on the
:class:`~mmgap_core.store.base.VectorStore` and :class:`~mmgap_core.encoders.base.Encoder` protocols.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .encoders.base import Encoder
    from .engine import RetrievalEngine
    from .store.base import WritableVectorStore

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "build_encoder",
    "open_engine",
    "open_store",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


def open_store(
    db=None, *, host: str | None = None, port: int | None = None, name: str = "mmgap"
) -> WritableVectorStore:
    """mmgap's own Chroma store: on a ``chroma run`` server when ``host`` is given, else embedded.

    Parameters
    ----------
    db : str or os.PathLike, optional
        Folder of the embedded store (``PersistentClient``); default ``"mmgap-db"``.
    host, port : str and int, optional
        A Chroma server; ``port`` defaults to 8000.
    name : str, default "mmgap"
        Store name: collections are ``NAME-<modality>`` and ``NAME-mmgap``.

    Returns
    -------
    ChromaStore
    """
    from .store.chroma import ChromaStore

    if host:
        return ChromaStore.http(host, int(port or 8000), name)
    return ChromaStore.persistent(Path(db or "mmgap-db"), name)


def build_encoder(
    spec: Mapping[str, Any] | None = None,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    model_config: str | None = None,
    device: str | None = None,
) -> Encoder:
    """The encoder a recorded ``spec`` describes, with explicit arguments taking precedence.

    Parameters
    ----------
    spec : mapping, optional
        What ``encoder.spec()`` returned at index time (kept in the store's manifest):
        ``{"kind": "open_clip", "model_name", "pretrained", "model_config", "weights_sha256"}``, or
        ``{"kind": "simulated", "profile"}``. Other kinds are ignored.
    model, pretrained, model_config : str, optional
        Override the spec. ``model`` replaces the recorded model, and with it the recorded weights
        and config unless they are given too. Local files are recorded by name and content hash
        only, never by path: name them again here.
    device : str, optional
        Torch device (default: cuda, then mps, then cpu).

    Returns
    -------
    Encoder
        With neither a spec nor ``model``: open_clip ViT-B-32 with laion2b_s34b_b79k weights.

    Raises
    ------
    ValueError
        When the spec names local files that were not given again, saying which option names them.
    """
    spec = dict(spec or {})
    kind = spec.get("kind")
    if model is None and kind == "simulated":
        from .simulator import SimulatedEncoder, SimulatorProfile

        profile = spec.get("profile")
        return SimulatedEncoder(
            SimulatorProfile(**profile) if isinstance(profile, dict) else profile
        )
    if spec and kind not in ("open_clip", "simulated"):
        logger.info("ignoring a recorded encoder of kind %r", kind)
    if model is None and kind == "open_clip":
        model = spec.get("model_name")
        if "weights_sha256" in spec:  # names and hashes: the user names local files again
            _require_local_files(spec, pretrained, model_config)
        pretrained = pretrained or spec.get("pretrained")
        model_config = model_config or spec.get("model_config")
    model = model or DEFAULT_MODEL
    if pretrained is None and model == DEFAULT_MODEL:
        pretrained = DEFAULT_PRETRAINED
    from .encoders.open_clip import OpenClipEncoder

    return OpenClipEncoder(model, pretrained, model_config=model_config, device=device)


def _require_local_files(spec: Mapping[str, Any], pretrained, model_config) -> None:
    """Say which option to give when a recorded encoder used local files (recorded by name)."""
    model_name = str(spec.get("model_name") or "")
    sha = spec.get("weights_sha256")
    if model_name.startswith("local-dir:"):
        raise ValueError(
            f"this store was built with the local model folder {model_name.split(':', 1)[1]!r}: "
            "name it again with --model local-dir:PATH (model='local-dir:PATH' in Python)"
        )
    if sha and pretrained is None:
        raise ValueError(
            f"this store was built with the local weights file {spec.get('pretrained')!r} "
            f"(sha256 {str(sha)[:12]}...): name it again with --pretrained PATH (pretrained= in "
            "Python); any byte-identical copy works"
        )
    if spec.get("model_config") and model_config is None:
        raise ValueError(
            f"this store was built with the model config {spec.get('model_config')!r}: name it "
            "again with --model-config PATH (model_config= in Python)"
        )


def open_engine(
    db=None,
    *,
    host: str | None = None,
    port: int | None = None,
    name: str = "mmgap",
    model: str | None = None,
    pretrained: str | None = None,
    model_config: str | None = None,
    device: str | None = None,
    **engine_options,
) -> RetrievalEngine:
    """Open a store and the encoder it was built with (recorded at index time) as an engine.

    Parameters
    ----------
    db, host, port, name
        Where the store is, see :func:`open_store`.
    model, pretrained, model_config, device
        Override the recorded encoder, see :func:`build_encoder`. With neither recorded nor given,
        the default is ViT-B-32 / laion2b_s34b_b79k.
    **engine_options
        Passed to :class:`~mmgap_core.engine.RetrievalEngine`.

    Returns
    -------
    RetrievalEngine
    """
    from .engine import RetrievalEngine

    store = open_store(db, host=host, port=port, name=name)
    spec = store.read_manifest().get("encoder")
    encoder = build_encoder(
        spec if isinstance(spec, Mapping) else None,
        model=model,
        pretrained=pretrained,
        model_config=model_config,
        device=device,
    )
    return RetrievalEngine(store, encoder, **engine_options)
