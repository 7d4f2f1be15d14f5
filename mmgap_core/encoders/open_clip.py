"""open_clip backend: :class:`OpenClipEncoder` (imports torch and open_clip).

Weights are resolved *before* the model is built: a pretrained tag is downloaded (or, in offline
mode, looked up in the local cache only) and the resulting file is handed to
``open_clip.create_model_and_transforms`` exactly like a user-supplied checkpoint. That gives one
loading path for tags, local checkpoints and custom configs, and a clean
:class:`WeightsUnavailableError` when weights cannot be had, never a silent fallback.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import io
import json
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip import pretrained as oc_pretrained
from PIL import Image
from tqdm.auto import tqdm

from mmgap_core.encoders.base import EmbeddingSet, ImageInput, WeightsUnavailableError

__all__ = ["OpenClipEncoder", "offline_mode"]

_PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16")
_HASH_CHUNK = 1 << 20
# PIL reports bombs through the *global* warnings filter; catch_warnings is not thread-safe, so
# only one decoding thread at a time may swap the filter (around the cheap header parse).
_PIL_WARNINGS_LOCK = threading.Lock()


def offline_mode() -> bool:
    """True when Hugging Face offline mode is requested (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``).

    The environment is read at call time: huggingface_hub freezes its own flag at import, so a flag
    set later (e.g. by a test's monkeypatch) would otherwise be missed.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    try:
        from huggingface_hub import constants as hf_constants
    except ImportError:  # pragma: no cover - huggingface_hub is an open_clip dependency
        return False
    return bool(hf_constants.HF_HUB_OFFLINE)


def _file_fingerprint(path: str) -> str:
    """First 12 hex digits of the file's sha256, read in chunks (checkpoints can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _state_fingerprint(model: torch.nn.Module) -> str:
    """First 12 hex digits of a sha256 over the parameters (identity for random-init models)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def _select_device(device: str | torch.device | None) -> torch.device:
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


def _register_model_config(model_name: str, config_path: str | os.PathLike) -> None:
    """Make ``model_name`` resolvable by open_clip from a config JSON file."""
    path = Path(config_path)
    if not path.is_file():
        raise ValueError(f"model_config: file not found: '{path}'")
    if path.suffix != ".json":
        raise ValueError(f"model_config: expected a .json file, got '{path.name}'")
    if path.stem != model_name:
        # open_clip registers a config file under its file stem.
        raise ValueError(
            f"model_config: open_clip names a config after its file, so '{path.name}' defines model "
            f"'{path.stem}', not '{model_name}'; rename the file to '{model_name}.json'"
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"model_config: cannot read '{path}' as JSON ({exc})") from exc
    missing = [
        k
        for k in ("embed_dim", "vision_cfg", "text_cfg")
        if not isinstance(cfg, dict) or k not in cfg
    ]
    if missing:
        raise ValueError(f"model_config: '{path}' lacks required open_clip keys {missing}")
    if open_clip.get_model_config(model_name) != cfg:
        # Re-adding appends the path last, so this file wins over an earlier one with the same stem.
        open_clip.add_model_config(path)
    if open_clip.get_model_config(model_name) != cfg:  # pragma: no cover - open_clip changed
        raise RuntimeError(f"model_config: open_clip did not register '{path}' as '{model_name}'")


def _hf_cache_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """Repo id and the file names open_clip would fetch for an ``hf_hub`` entry, preferred first."""
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or oc_pretrained.HF_WEIGHTS_NAME
    names = []
    if filename == oc_pretrained.HF_WEIGHTS_NAME:
        names.append(oc_pretrained.HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    names.append(filename)
    return repo_id, names


def _find_cached_weights(cfg: dict, cache_dir: str | None) -> tuple[str | None, str]:
    """Local-only lookup of a tag's weights. Returns (path or None, where it looked)."""
    if cfg.get("file"):
        return (cfg["file"] if os.path.isfile(cfg["file"]) else None), cfg["file"]
    looked = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, names = _hf_cache_candidates(cfg["hf_hub"])
        for name in names:
            hit = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit, ""
        looked.append(f"Hugging Face cache for {repo_id} ({', '.join(names)})")
    if cfg.get("url"):
        target = os.path.join(
            cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"])
        )
        if os.path.isfile(target):
            return target, ""
        looked.append(target)
    return None, "; ".join(looked) or "nowhere (the tag names no source)"


def _resolve_tag_weights(model_name: str, tag: str, cache_dir: str | None) -> str:
    """Local file holding the weights of a pretrained tag, downloading only when online."""
    cfg = oc_pretrained.get_pretrained_cfg(model_name, tag)
    # Cached weights of a tag never change: use them without touching the network.
    path, looked = _find_cached_weights(cfg, cache_dir)
    if path is not None:
        return path
    if offline_mode():
        # Never call open_clip's downloader here: its plain-URL path (urllib) ignores offline mode.
        raise WeightsUnavailableError(
            f"open_clip weights {model_name}:{tag} are unavailable: offline mode is set "
            f"(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and they are not in the local cache "
            f"(looked in: {looked}). Download them once while online, or pass a local "
            f"checkpoint file as `pretrained`."
        )
    try:
        path = oc_pretrained.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"open_clip weights {model_name}:{tag} could not be downloaded: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not path or not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"open_clip weights {model_name}:{tag} could not be downloaded: no file was produced"
        )
    return path


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(model_name: str, text_cfg_key: str) -> Any:
    # Building the BPE tokenizer costs ~0.3 s; it is stateless apart from a memo, so share it.
    # text_cfg_key keys the cache on the config content, not only on the name.
    return open_clip.get_tokenizer(model_name)


class _Skip(Exception):
    """An input item that cannot be embedded; the message is the reason."""


def _describe(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return f"'{os.fspath(item)}'"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    return f"<{type(item).__name__}>"


def _check_pixels(size: tuple[int, int], source: str) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise _Skip(
            f"decompression bomb refused: {source} declares {size[0]}x{size[1]} = "
            f"{size[0] * size[1]} pixels, above PIL.Image.MAX_IMAGE_PIXELS={limit}"
        )


def _decode_image(item: ImageInput) -> Image.Image:
    """Open, fully decode and convert one input to an RGB PIL image, or raise :class:`_Skip`."""
    source = _describe(item)
    if isinstance(item, Image.Image):
        try:
            item.load()
            return item.convert("RGB")
        except Exception as exc:
            raise _Skip(f"cannot decode PIL image: {type(exc).__name__}: {exc}") from exc
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not isinstance(path, str):
            raise _Skip(f"unsupported path type {type(path).__name__}; use str paths")
        if not os.path.exists(path):
            raise _Skip(f"file not found: {source}")
        if not os.path.isfile(path):
            raise _Skip(f"not a regular file: {source}")
        fp: Any = path
    elif isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise _Skip("empty bytes: no image data")
        fp = io.BytesIO(bytes(item))
    else:
        raise _Skip(
            f"unsupported input type {type(item).__name__}; expected a path (str or os.PathLike), "
            f"a PIL.Image.Image or encoded image bytes"
        )
    try:
        with _PIL_WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
        with img:
            # Sizes can change at load (ICO/ICNS/GIF frames), so check before and after decoding.
            _check_pixels(img.size, source)
            img.load()
            _check_pixels(img.size, source)
            return img.convert("RGB")
    except _Skip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _Skip(f"decompression bomb refused: {source}: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise _Skip(
            f"not a recognised image file (PIL cannot identify its format): {source}"
        ) from exc
    except FileNotFoundError as exc:
        raise _Skip(f"file not found: {source}") from exc
    except PermissionError as exc:
        raise _Skip(f"cannot read file (permission denied): {source}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL signals broken data with OSError ("image file is truncated"), SyntaxError, EOFError...
        raise _Skip(f"corrupt or truncated image {source}: {type(exc).__name__}: {exc}") from exc


def _prepare_image(item: ImageInput, preprocess: Any) -> tuple[torch.Tensor | None, str | None]:
    """Decode + preprocess one item in a worker thread: (tensor, None) or (None, reason)."""
    try:
        img = _decode_image(item)
    except _Skip as exc:
        return None, str(exc)
    except Exception as exc:  # an unexpected decoder error must not abort the whole corpus
        return None, f"cannot decode image {_describe(item)}: {type(exc).__name__}: {exc}"
    try:
        return preprocess(img), None
    except Exception as exc:
        return None, f"cannot preprocess image {_describe(item)}: {type(exc).__name__}: {exc}"


def _text_failure(text: Any) -> str | None:
    if not isinstance(text, str):
        return f"not a string (got {type(text).__name__})"
    if not text.strip():
        return "empty or whitespace-only text"
    return None


def _as_item_sequence(items: Any, name: str, single_hint: str) -> Sequence[Any]:
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


def _strict_error(kind: str, failures: dict[int, str]) -> ValueError:
    shown = "; ".join(f"[{pos}] {reason}" for pos, reason in list(failures.items())[:5])
    more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
    return ValueError(f"strict=True: {len(failures)} {kind} could not be embedded: {shown}{more}")


class OpenClipEncoder:
    """CLIP-style encoder over open_clip, implementing :class:`~mmgap_core.encoders.Encoder`.

    Args:
        model_name: an open_clip architecture (``open_clip.list_models()``), or the name defined by
            ``model_config``.
        pretrained: a tag ``open_clip.list_pretrained()`` knows for ``model_name``, a local checkpoint
            file, or None for random weights (tests only).
        device: torch device; default cuda, then mps, then cpu.
        batch_size: default batch size of ``embed_texts`` / ``embed_images``.
        num_workers: threads decoding + preprocessing images (0: decode inline).
        model_config: path to an open_clip model-config JSON named ``<model_name>.json``; registered
            with ``open_clip.add_model_config`` so the model loads through the regular path.
        precision: one of ``fp32``, ``fp16``, ``bf16``, ``pure_fp16``, ``pure_bf16``.
        cache_dir: where downloaded weights live (open_clip / Hugging Face cache otherwise).

    Raises:
        ValueError: unknown model name, unknown tag (that is not an existing file), bad options.
        WeightsUnavailableError: the tag's weights cannot be downloaded, or offline mode is set and
            they are not cached.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | os.PathLike | None = "laion2b_s34b_b79k",
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        model_config: str | os.PathLike | None = None,
        precision: str = "fp32",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if not isinstance(model_name, str) or not model_name.strip():
            raise ValueError(f"model_name: expected a non-empty str, got {model_name!r}")
        model_name = model_name.strip().replace("/", "-")  # open_clip accepts 'ViT-B/32' this way
        if precision not in _PRECISIONS:
            raise ValueError(f"precision: expected one of {_PRECISIONS}, got {precision!r}")
        self.batch_size = self._check_batch_size(batch_size, "batch_size")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers: expected an int >= 0, got {num_workers!r}")
        self.num_workers = num_workers
        cache_dir = os.fspath(cache_dir) if cache_dir is not None else None

        if model_config is not None:
            _register_model_config(model_name, model_config)
        if model_name not in open_clip.list_models():
            close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise ValueError(
                f"model_name: unknown open_clip model '{model_name}'.{hint} Valid names are listed by "
                f"open_clip.list_models() (tags per model: open_clip.list_pretrained()); for a custom "
                f"architecture pass model_config='<path>/{model_name}.json'."
            )

        self.model_name = model_name
        # Kept so a store can record how to rebuild this encoder (see mmgap_core.engine.encoder_spec).
        self.model_config = None if model_config is None else str(Path(model_config).resolve())
        self.precision = precision
        self.device = _select_device(device)

        tag: str | None = None
        checkpoint: str | None = None
        if pretrained is not None:
            pretrained_str = os.fspath(pretrained)
            if not isinstance(pretrained_str, str) or not pretrained_str:
                raise ValueError(f"pretrained: expected a tag or a file path, got {pretrained!r}")
            if oc_pretrained.is_pretrained_cfg(model_name, pretrained_str):
                tag = pretrained_str.lower().replace("-", "_")  # open_clip's canonical tag spelling
                checkpoint = _resolve_tag_weights(model_name, tag, cache_dir)
            elif os.path.isfile(pretrained_str):
                checkpoint = pretrained_str
            else:
                tags = open_clip.list_pretrained_tags_by_model(model_name)
                known = (
                    f"valid tags for '{model_name}': {tags}"
                    if tags
                    else f"open_clip knows no pretrained tags for '{model_name}'"
                )
                raise ValueError(
                    f"pretrained: '{pretrained_str}' is neither a pretrained tag of '{model_name}' nor "
                    f"an existing checkpoint file; {known}"
                )

        preprocess_overrides: dict[str, Any] = {}
        if tag is not None:
            tag_cfg = oc_pretrained.get_pretrained_cfg(model_name, tag)
            # The file path loses the tag's preprocessing; pass it explicitly, as open_clip would.
            preprocess_overrides = {
                "image_mean": tag_cfg.get("mean"),
                "image_std": tag_cfg.get("std"),
                "image_interpolation": tag_cfg.get("interpolation"),
                "image_resize_mode": tag_cfg.get("resize_mode"),
            }
            model_quick_gelu = bool(open_clip.get_model_config(model_name).get("quick_gelu", False))
            if bool(tag_cfg.get("quick_gelu", False)) != model_quick_gelu:
                warnings.warn(
                    f"QuickGELU mismatch: tag '{tag}' was trained with quick_gelu="
                    f"{tag_cfg.get('quick_gelu', False)} but '{model_name}' uses {model_quick_gelu}; "
                    f"embeddings will be degraded (use the '-quickgelu' model variant).",
                    UserWarning,
                    stacklevel=2,
                )

        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=checkpoint,
                precision=precision,
                device=self.device,
                pretrained_text=False,  # a random-init HF text tower must not download base weights
                cache_dir=cache_dir,
                **preprocess_overrides,
            )
        except OSError as exc:
            if self._uses_hf_text(model_name):
                raise WeightsUnavailableError(
                    f"open_clip model '{model_name}' needs Hugging Face text-tower files that could not "
                    f"be loaded (offline or not cached?): {exc}"
                ) from exc
            raise
        model.eval()
        self._model = model
        self._preprocess = preprocess
        # fp16/bf16 keep some fp32 weights (first visual param may be fp32): ask open_clip.
        self._input_dtype = open_clip.get_input_dtype(precision) or torch.float32

        text_cfg = open_clip.get_model_config(model_name).get("text_cfg", {})
        try:
            self._tokenizer = _cached_tokenizer(model_name, json.dumps(text_cfg, sort_keys=True))
        except OSError as exc:
            raise WeightsUnavailableError(
                f"tokenizer files for open_clip model '{model_name}' could not be loaded "
                f"(offline or not cached?): {exc}"
            ) from exc
        self.context_length = int(getattr(self._tokenizer, "context_length", 0) or 0)

        if tag is not None:
            self.model_id = f"open_clip:{model_name}:{tag}"
        elif checkpoint is not None:
            self.model_id = (
                f"open_clip:{model_name}:file:{os.path.basename(checkpoint)}:"
                f"{_file_fingerprint(checkpoint)}"
            )
        else:
            self.model_id = f"open_clip:{model_name}:random:{_state_fingerprint(model)}"
        self.pretrained = tag if tag is not None else checkpoint

        with torch.inference_mode():
            probe = self._model.encode_text(self._tokenizer([""]).to(self.device))
        self.dim = int(probe.shape[-1])

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _uses_hf_text(model_name: str) -> bool:
        text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
        return bool(text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"))

    @staticmethod
    def _check_batch_size(batch_size: Any, name: str) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{name}: expected a positive int, got {batch_size!r}")
        return batch_size

    def _resolve_batch_size(self, batch_size: int | None) -> int:
        if batch_size is None:
            return self.batch_size
        return self._check_batch_size(batch_size, "batch_size")

    def _finish(self, rows: list[torch.Tensor]) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([r.numpy() for r in rows], axis=0)

    def _normalise(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

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
        """Embed texts; empty/whitespace-only or non-str items are failures (ValueError if strict).

        Texts longer than the model's context length are truncated by the tokenizer.
        """
        texts = _as_item_sequence(texts, "texts", "embed_query_text()")
        bs = self._resolve_batch_size(batch_size)
        failures: dict[int, str] = {}
        ok_positions: list[int] = []
        for pos, text in enumerate(texts):
            reason = _text_failure(text)
            if reason is None:
                ok_positions.append(pos)
            else:
                failures[pos] = reason
        if strict and failures:
            raise _strict_error("texts", failures)

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
        """One text -> ``[dim]`` float32 unit vector; ValueError naming the reason if it cannot be embedded."""
        reason = _text_failure(text)
        if reason is not None:
            raise ValueError(f"query text: {reason}")
        return self.embed_texts([text], strict=True).vectors[0]

    # ------------------------------------------------------------------ images

    def _prepared_batches(
        self, images: Sequence[ImageInput], bs: int, pool: ThreadPoolExecutor | None
    ) -> Iterator[list[tuple[int, torch.Tensor | None, str | None]]]:
        """Yield decoded batches; batch i+1 is already decoding while the caller runs batch i."""
        n = len(images)
        if pool is None:
            for start in range(0, n, bs):
                yield [
                    (p, *_prepare_image(images[p], self._preprocess))
                    for p in range(start, min(start + bs, n))
                ]
            return
        pending: list[tuple[int, Future]] | None = None
        for start in range(0, n, bs):
            submitted = [
                (p, pool.submit(_prepare_image, images[p], self._preprocess))
                for p in range(start, min(start + bs, n))
            ]
            if pending is not None:
                yield [(p, *fut.result()) for p, fut in pending]
            pending = submitted
        if pending is not None:
            yield [(p, *fut.result()) for p, fut in pending]

    def embed_images(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int | None = None,
        progress: bool = False,
        strict: bool = False,
    ) -> EmbeddingSet:
        """Embed images given as file paths, PIL images or encoded bytes.

        Unreadable items (missing file, corrupt/truncated data, not an image, decompression bomb,
        unsupported type) are recorded in ``failures`` and the rest are embedded; with
        ``strict=True`` the first batch holding a failure raises ValueError instead.
        """
        images = _as_item_sequence(images, "images", "embed_query_image()")
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
                for batch in self._prepared_batches(images, bs, pool):
                    tensors = []
                    for pos, tensor, reason in batch:
                        if tensor is None:
                            failures[pos] = reason or "unknown failure"
                        else:
                            ok_positions.append(pos)
                            tensors.append(tensor)
                    if strict and failures:
                        raise _strict_error("images", failures)
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
        """One image -> ``[dim]`` float32 unit vector; ValueError naming the reason if it cannot be embedded."""
        result = self.embed_images([image])
        if result.failures:
            raise ValueError(f"query image: {result.failures[0]}")
        return result.vectors[0]
