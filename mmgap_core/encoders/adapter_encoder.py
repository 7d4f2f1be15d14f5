"""The encoder an integration adapter wraps: a given one, checked, or a newly loaded open_clip.

The LangChain and LlamaIndex embedding adapters take either an existing mmgap encoder
(``encoder=``) or open_clip model options; :func:`encoder_for_adapter` settles which, so both
adapters accept and refuse the same things.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ADAPTER_ENCODER_METHODS", "encoder_for_adapter"]

#: What an adapter calls on its encoder.
ADAPTER_ENCODER_METHODS = ("embed_texts", "embed_images", "embed_query_text", "embed_query_image")


def encoder_for_adapter(
    encoder: Any,
    model_name: str,
    pretrained: str | os.PathLike | None,
    *,
    device: str | None,
    model_config: str | os.PathLike | None,
    encoder_kwargs: dict[str, Any],
    adapter: str,
) -> Any:
    """The encoder an adapter wraps: ``encoder`` when given, else a new ``OpenClipEncoder``.

    Parameters
    ----------
    encoder : Encoder or None
        An existing mmgap encoder; it must have the methods in :data:`ADAPTER_ENCODER_METHODS`.
    model_name : str
        open_clip architecture (ignored with ``encoder``).
    pretrained : str or os.PathLike or None
        Pretrained tag or local checkpoint file (ignored with ``encoder``).
    device : str or None
        Torch device for a newly loaded model.
    model_config : str or os.PathLike or None
        open_clip model-config JSON for a custom architecture.
    encoder_kwargs : dict
        Further ``OpenClipEncoder`` options.
    adapter : str
        The adapter's class name, for the error message.

    Returns
    -------
    Encoder

    Raises
    ------
    ValueError
        When ``encoder`` is given together with model options, or lacks a method an adapter calls.
    """
    if encoder is None:
        from mmgap_core.encoders.open_clip import OpenClipEncoder

        encoder = OpenClipEncoder(
            model_name,
            pretrained=pretrained,
            device=device,
            model_config=model_config,
            **encoder_kwargs,
        )
    elif encoder_kwargs or model_config is not None or device is not None:
        raise ValueError(
            "encoder= was given: model options (device, model_config, ...) belong to that "
            f"encoder, not to {adapter}; give either encoder= or model options, not both"
        )
    for method in ADAPTER_ENCODER_METHODS:
        if not callable(getattr(encoder, method, None)):
            raise ValueError(f"encoder {encoder!r} has no {method}() method")
    return encoder
