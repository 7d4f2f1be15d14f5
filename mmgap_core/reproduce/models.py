"""Model specs of ``mmgap reproduce``: ``NAME:TAG`` strings, parsed, built as open_clip encoders."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MODEL_LOAD_ERRORS", "ModelSpec", "as_model_list", "build_encoder", "parse_model_specs"]

# Loading failures that skip one model and let the others run: missing / unknown weights, a bad
# tag or checkpoint path (ValueError), unreadable files, a checkpoint that does not fit the model.
MODEL_LOAD_ERRORS = (ValueError, OSError, RuntimeError, pickle.UnpicklingError, KeyError)


@dataclass(frozen=True)
class ModelSpec:
    """An open_clip model to build.

    Attributes
    ----------
    model_name : str
        The architecture, e.g. ``"ViT-B-32"``.
    pretrained : str
        A pretrained tag (``"laion2b_s34b_b79k"``) or a checkpoint file.
    model_config : str or None
        An open_clip model config ``NAME.json`` for a custom architecture.
    """

    model_name: str
    pretrained: str
    model_config: str | None = None

    @property
    def label(self) -> str:
        """``NAME:TAG``, the name a skipped model is reported under."""
        return f"{self.model_name}:{self.pretrained}"

    @classmethod
    def parse(cls, text: str, *, model_config: str | os.PathLike | None = None) -> ModelSpec:
        """Parse ``"NAME:TAG"`` (or ``"NAME:/path/to/checkpoint"``).

        Parameters
        ----------
        text : str
            The spec.
        model_config : str or os.PathLike, optional
            Attached only when its file name is ``NAME.json``: open_clip names a config after its
            file.

        Returns
        -------
        ModelSpec

        Raises
        ------
        ValueError
            ``text`` is not ``NAME:TAG``.
        """
        name, sep, pretrained = text.strip().partition(":")
        if not sep or not name.strip() or not pretrained.strip():
            raise ValueError(
                f"model spec {text!r}: expected NAME:TAG (e.g. ViT-B-32:laion2b_s34b_b79k)"
            )
        config = None
        if model_config is not None and Path(model_config).stem == name.strip():
            config = os.fspath(model_config)
        return cls(name.strip(), pretrained.strip(), config)


def parse_model_specs(
    spec: str, *, model_config: str | os.PathLike | None = None
) -> list[ModelSpec]:
    """Parse a comma-separated ``NAME:TAG`` list.

    Parameters
    ----------
    spec : str
        ``NAME:TAG[,NAME:TAG...]``.
    model_config : str or os.PathLike, optional
        See :meth:`ModelSpec.parse`.

    Returns
    -------
    list of ModelSpec

    Raises
    ------
    ValueError
        An empty list, or a part that is not ``NAME:TAG``.
    """
    parts = [p for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--models: expected NAME:TAG[,NAME:TAG...], got {spec!r}")
    return [ModelSpec.parse(p, model_config=model_config) for p in parts]


def build_encoder(spec: ModelSpec, options: Mapping[str, Any]):
    """Build the open_clip encoder of ``spec``.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    options : mapping
        Keyword arguments for ``OpenClipEncoder`` (device, batch_size, cache_dir, ...).

    Returns
    -------
    OpenClipEncoder

    Raises
    ------
    Exception
        One of :data:`MODEL_LOAD_ERRORS` when the weights cannot be loaded.
    """
    from ..encoders.open_clip import OpenClipEncoder

    return OpenClipEncoder(
        spec.model_name, spec.pretrained, model_config=spec.model_config, **dict(options)
    )


def as_model_list(encoders_or_specs) -> list:
    """Return one encoder, spec or ``NAME:TAG`` string as a one-item list; else ``list(...)``."""
    if isinstance(encoders_or_specs, (str, ModelSpec)) or hasattr(encoders_or_specs, "embed_texts"):
        return [encoders_or_specs]
    return list(encoders_or_specs)
