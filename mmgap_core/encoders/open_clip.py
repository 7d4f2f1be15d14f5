"""open_clip backend: :class:`OpenClipEncoder` (imports torch and open_clip).

The encoder settles the model name and its weights first (:mod:`mmgap_core.encoders.weights`),
then lets ``open_clip.create_model_and_transforms`` build the model. That gives one loading path for
tags, local checkpoints, custom configs and open_clip's ``hf-hub:``/``local-dir:`` names, and a
clean :class:`WeightsUnavailableError` when weights cannot be had, never a silent fallback. Images
are checked and decoded by :mod:`mmgap_core.encoders.image_decoding` in worker threads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from mmgap_core.encoders.base import EmbeddingSet, ImageInput, WeightsUnavailableError
from mmgap_core.encoders.batching import (
    as_item_sequence,
    check_batch_size,
    prepared_batches,
    strict_error,
    text_failure,
)
from mmgap_core.encoders.image_decoding import DecodeLimits
from mmgap_core.encoders.model_ids import checkpoint_model_id
from mmgap_core.encoders.model_names import resolve_model_name
from mmgap_core.encoders.weights import (
    ResolvedWeights,
    model_config_dict,
    offline_mode,
    resolve_weights,
)

__all__ = ["DEFAULT_MODEL", "DEFAULT_PRETRAINED", "OpenClipEncoder", "offline_mode"]

logger = logging.getLogger(__name__)

#: The encoder used when none is named: ViT-B-32 with LAION-2B weights.
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
_PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16")
_SCHEMAS = ("hf-hub:", "local-dir:")


def _state_fingerprint(model: torch.nn.Module) -> str:
    """sha256 hex digest over the parameters (the identity of a random-init model)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _select_device(device: str | torch.device | None) -> torch.device:
    """The given torch device, else cuda, then mps, then cpu."""
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device: {device!r} is not a valid torch device ({exc})") from exc
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(model_name: str, text_cfg_key: str, cache_dir: str | None) -> Any:
    # Building the BPE tokenizer costs ~0.3 s; it is stateless apart from a memo, so share it.
    # text_cfg_key keys the cache on the config content, not only on the name.
    return open_clip.get_tokenizer(model_name, cache_dir=cache_dir)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class OpenClipEncoder:
    """CLIP-style encoder over open_clip, implementing :class:`~mmgap_core.encoders.Encoder`.

    Parameters
    ----------
    model_name : str
        An open_clip architecture (``open_clip.list_models()``), the name defined by
        ``model_config``, ``hf-hub:<org>/<repo>`` or ``local-dir:<folder>`` (a folder holding
        ``open_clip_config.json`` and a weights file).
    pretrained : str, os.PathLike or None
        A tag ``open_clip.list_pretrained()`` knows for ``model_name``, a local checkpoint file, or
        None for random weights (tests only). ``hf-hub:``/``local-dir:`` names bring their own
        weights: pass None (the default tag is ignored for them).
    device : str or torch.device, optional
        Default cuda, then mps, then cpu.
    batch_size : int
        Default batch size of ``embed_texts`` / ``embed_images``.
    num_workers : int
        Threads decoding + preprocessing images (0: decode inline).
    model_config : str or os.PathLike, optional
        Path to an open_clip model-config JSON named ``<model_name>.json``; registered with
        ``open_clip.add_model_config`` so the model loads through the regular path.
    precision : str
        One of ``fp32``, ``fp16``, ``bf16``, ``pure_fp16``, ``pure_bf16``.
    cache_dir : str or os.PathLike, optional
        Where downloaded weights live (open_clip / Hugging Face cache otherwise).

    Attributes
    ----------
    model_id : str
        Identity of the model and weights; format in :mod:`mmgap_core.encoders.model_ids`.
    dim : int
        Embedding width.

    Raises
    ------
    ValueError
        Unknown model name, unknown tag (that is not an existing file), a file that is not a
        checkpoint of the model, bad options.
    WeightsUnavailableError
        The weights cannot be downloaded, or offline mode is set and they are not cached.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        pretrained: str | os.PathLike | None = DEFAULT_PRETRAINED,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        model_config: str | os.PathLike | None = None,
        precision: str = "fp32",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self._check_options(batch_size, num_workers, precision)
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        self.model_name = resolve_model_name(model_name, model_config)
        #: Absolute path of the custom config, or None; :meth:`spec` records only its file name.
        self.model_config = None if model_config is None else str(Path(model_config).resolve())
        self.precision = precision
        self.device = _select_device(device)
        self._weights = resolve_weights(self.model_name, self._pretrained_arg(pretrained), cache)
        self.pretrained = self._weights.tag or (
            self._weights.checkpoint if self._weights.source == "file" else None
        )
        self._model_cfg = model_config_dict(self.model_name, self._weights)
        self._model, self._preprocess = self._build_model(cache)
        self._tokenizer = self._load_tokenizer(cache)
        self.context_length = int(getattr(self._tokenizer, "context_length", 0) or 0)
        self.model_id = self._weights.model_id(self.model_name) or checkpoint_model_id(
            self._weights.id_name(self.model_name), _state_fingerprint(self._model), "random"
        )
        self.dim = self._probe_dim()
        self._decode_limits = self._read_decode_limits()
        logger.debug("loaded %r", self)

    # ------------------------------------------------------------------ construction steps

    def _check_options(self, batch_size: Any, num_workers: Any, precision: Any) -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"precision: expected one of {_PRECISIONS}, got {precision!r}")
        self.batch_size = check_batch_size(batch_size, "batch_size")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers: expected an int >= 0, got {num_workers!r}")
        self.num_workers = num_workers

    def _pretrained_arg(self, pretrained: str | os.PathLike | None) -> str | os.PathLike | None:
        """``pretrained`` for plain names; None for schema names, which carry their own weights."""
        if not self.model_name.startswith(_SCHEMAS) or pretrained is None:
            return pretrained
        if pretrained == DEFAULT_PRETRAINED:
            return None  # the signature's default, not a user choice
        raise ValueError(
            f"pretrained: '{self.model_name.split(':', 1)[0]}:' model names load their own "
            f"weights; pass pretrained=None instead of {os.fspath(pretrained)!r}"
        )

    def _build_model(self, cache_dir: str | None) -> tuple[torch.nn.Module, Any]:
        weights: ResolvedWeights = self._weights
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name,
                pretrained=weights.pretrained_arg,
                precision=self.precision,
                device=self.device,
                pretrained_text=False,  # a random-init HF text tower must not download weights
                cache_dir=cache_dir,
                **weights.preprocess,
            )
        except Exception as exc:
            if isinstance(exc, OSError) and (self._uses_hf_text() or weights.source == "hf-hub"):
                raise WeightsUnavailableError(
                    f"open_clip model '{self.model_name}' needs Hugging Face files that could not "
                    f"be loaded (offline or not cached?): {_one_line(exc)}"
                ) from exc
            out_of_memory = (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))
            if isinstance(exc, out_of_memory) or weights.source not in ("file", "local-dir"):
                raise
            raise self._not_a_checkpoint(exc) from exc
        model.eval()
        return model, preprocess

    def _not_a_checkpoint(self, exc: BaseException) -> ValueError:
        return ValueError(
            f"pretrained: cannot load '{self._weights.checkpoint}' as open_clip weights of "
            f"'{self.model_name}' ({_one_line(exc)})"
        )

    def _load_tokenizer(self, cache_dir: str | None) -> Any:
        text_cfg = json.dumps(self._model_cfg.get("text_cfg", {}), sort_keys=True)
        try:
            return _cached_tokenizer(self.model_name, text_cfg, cache_dir)
        except OSError as exc:
            raise WeightsUnavailableError(
                f"tokenizer files for open_clip model '{self.model_name}' could not be loaded "
                f"(offline or not cached?): {_one_line(exc)}"
            ) from exc

    def _probe_dim(self) -> int:
        with torch.inference_mode():
            probe = self._model.encode_text(self._tokenizer([""]).to(self.device))
        return int(probe.shape[-1])

    def _read_decode_limits(self) -> DecodeLimits:
        """How the preprocessing resizes images: decoding refuses what it would blow up."""
        cfg = open_clip.get_model_preprocess_cfg(self._model) or {}
        size = cfg.get("size")
        if isinstance(size, (list, tuple)):
            size = (int(size[0]), int(size[-1]))
        mode = cfg.get("resize_mode") or "shortest"
        return DecodeLimits(target_size=size, resize_mode=mode)

    def _uses_hf_text(self) -> bool:
        text_cfg = self._model_cfg.get("text_cfg", {})
        return bool(text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"))

    # ------------------------------------------------------------------ identity

    def spec(self) -> dict[str, Any]:
        """How to rebuild this encoder later, as recorded in a store's manifest.

        Returns
        -------
        dict
            ``{"kind": "open_clip", "model_name", "pretrained", "model_config",
            "weights_sha256"}``, JSON-safe and free of local absolute paths. A pretrained tag is
            recorded as the tag. A local checkpoint is recorded by its file name and content
            hash (``weights_sha256``, 64 hex digits); a ``local-dir:`` model by its folder name
            and the hash of its weights; a custom ``model_config`` by its file name. To reopen
            such a store, the user names the local files again (``--pretrained PATH``,
            ``--model local-dir:PATH``, ``--model-config PATH``); any byte-identical copy
            matches, because the model id is content-based.
        """
        weights = self._weights
        model_name = self.model_name
        if weights.source == "local-dir":
            model_name = f"local-dir:{Path(model_name.split(':', 1)[1]).name}"
        pretrained = weights.tag
        if weights.source == "file":
            pretrained = os.path.basename(weights.checkpoint)
        return {
            "kind": "open_clip",
            "model_name": model_name,
            "pretrained": pretrained,
            "model_config": None if self.model_config is None else Path(self.model_config).name,
            "weights_sha256": weights.sha256,
        }

    # ------------------------------------------------------------------ helpers

    def _resolve_batch_size(self, batch_size: int | None) -> int:
        if batch_size is None:
            return self.batch_size
        return check_batch_size(batch_size, "batch_size")

    def _finish(self, rows: list[torch.Tensor]) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([r.numpy() for r in rows], axis=0)

    def _normalise(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    @property
    def _input_dtype(self) -> torch.dtype:
        # fp16/bf16 keep some fp32 weights (first visual param may be fp32): ask open_clip.
        return open_clip.get_input_dtype(self.precision) or torch.float32

    def __repr__(self) -> str:
        return (
            f"OpenClipEncoder(model_id={self.model_id!r}, dim={self.dim}, device='{self.device}')"
        )

    # ------------------------------------------------------------------ texts

    def embed_texts(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        progress: bool = False,
        strict: bool = False,
    ) -> EmbeddingSet:
        """Embed texts; empty/whitespace-only or non-str items are failures.

        Parameters
        ----------
        texts : sequence of str
            Texts longer than the model's context length are truncated by the tokenizer.
        batch_size : int, optional
            Default: the encoder's ``batch_size``.
        progress : bool
            Show a progress bar on stderr.
        strict : bool
            Raise ``ValueError`` instead of recording failures.

        Returns
        -------
        EmbeddingSet
        """
        texts = as_item_sequence(texts, "texts", "embed_query_text()")
        bs = self._resolve_batch_size(batch_size)
        failures: dict[int, str] = {}
        ok_positions: list[int] = []
        for pos, text in enumerate(texts):
            reason = text_failure(text)
            if reason is None:
                ok_positions.append(pos)
            else:
                failures[pos] = reason
        if strict and failures:
            raise strict_error("texts", failures)

        rows: list[torch.Tensor] = []
        with tqdm(
            total=len(texts), desc="embedding texts", unit="item", disable=not progress
        ) as bar:
            bar.update(len(failures))
            with torch.inference_mode():
                for start in range(0, len(ok_positions), bs):
                    chunk = [texts[p] for p in ok_positions[start : start + bs]]
                    tokens = self._tokenizer(chunk).to(self.device)
                    rows.append(self._normalise(self._model.encode_text(tokens)))
                    bar.update(len(chunk))
        return EmbeddingSet(
            vectors=self._finish(rows),
            model_id=self.model_id,
            modality="text",
            indices=np.asarray(ok_positions, dtype=np.int64),
            failures=failures,
        )

    def embed_query_text(self, text: str) -> np.ndarray:
        """One text -> ``[dim]`` float32 unit vector; ValueError naming the reason if not."""
        reason = text_failure(text)
        if reason is not None:
            raise ValueError(f"query text: {reason}")
        return self.embed_texts([text], strict=True).vectors[0]

    # ------------------------------------------------------------------ images

    def embed_images(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int | None = None,
        progress: bool = False,
        strict: bool = False,
    ) -> EmbeddingSet:
        """Embed images given as file paths, PIL images or encoded bytes.

        Parameters
        ----------
        images : sequence of str, os.PathLike, PIL.Image.Image or bytes
            Unreadable items (missing or special file, corrupt data, not an image, decompression
            bomb, too thin for the model's resize, unsupported type) are recorded in ``failures``
            with a reason and the rest are embedded.
        batch_size : int, optional
            Default: the encoder's ``batch_size``.
        progress : bool
            Show a progress bar on stderr.
        strict : bool
            Raise ``ValueError`` at the first batch that holds a failure.

        Returns
        -------
        EmbeddingSet
        """
        images = as_item_sequence(images, "images", "embed_query_image()")
        bs = self._resolve_batch_size(batch_size)
        failures: dict[int, str] = {}
        ok_positions: list[int] = []
        rows: list[torch.Tensor] = []
        use_pool = self.num_workers > 0 and len(images) > 1
        pool = ThreadPoolExecutor(self.num_workers, "mmgap-decode") if use_pool else None
        try:
            with tqdm(
                total=len(images), desc="embedding images", unit="item", disable=not progress
            ) as bar:
                batches = prepared_batches(images, bs, self._preprocess, self._decode_limits, pool)
                for batch in batches:
                    tensors = []
                    for pos, tensor, reason in batch:
                        if tensor is None:
                            failures[pos] = reason or "unknown failure"
                        else:
                            ok_positions.append(pos)
                            tensors.append(tensor)
                    if strict and failures:
                        raise strict_error("images", failures)
                    if tensors:
                        pixels = torch.stack(tensors).to(self.device, dtype=self._input_dtype)
                        with torch.inference_mode():
                            rows.append(self._normalise(self._model.encode_image(pixels)))
                    bar.update(len(batch))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return EmbeddingSet(
            vectors=self._finish(rows),
            model_id=self.model_id,
            modality="image",
            indices=np.asarray(ok_positions, dtype=np.int64),
            failures=failures,
        )

    def embed_query_image(self, image: ImageInput) -> np.ndarray:
        """One image -> ``[dim]`` float32 unit vector; ValueError naming the reason if not."""
        result = self.embed_images([image])
        if result.failures:
            raise ValueError(f"query image: {result.failures[0]}")
        return result.vectors[0]
