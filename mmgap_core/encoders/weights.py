"""Which weights an open_clip model loads, and whether they are available offline.

open_clip's factory does the loading. This module only settles, *before* the model is built, what
it will load, so that missing weights raise :class:`WeightsUnavailableError` instead of open_clip
silently initialising random weights:

- **Pretrained tags.** open_clip's ``get_pretrained_cfg`` names the source. The weights are taken
  from the local cache when present (Hugging Face's ``local_files_only`` lookup, or open_clip's
  ``~/.cache/clip`` for plain URLs). Otherwise open_clip's ``download_pretrained`` fetches them,
  unless offline mode is set.
- **Local checkpoint files** are loaded as given, and identified by content
  (:mod:`mmgap_core.encoders.model_ids`).
- **``hf-hub:`` names.** The repo's config and weights are looked up in the Hugging Face cache, or
  downloaded with open_clip's ``download_pretrained_from_hf``; open_clip then loads them.
- **``local-dir:`` names.** open_clip loads the folder; the weights file it picks is hashed.

Offline mode (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``) is read when each function runs. Set it
before the process starts: huggingface_hub reads it once at import, and open_clip's own Hub calls
for an ``hf-hub:`` model follow huggingface_hub. open_clip and huggingface_hub are imported inside
the functions that need them.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmgap_core.encoders.base import WeightsUnavailableError
from mmgap_core.encoders.model_ids import checkpoint_model_id, file_sha256, tag_model_id
from mmgap_core.encoders.model_names import HF_HUB, LOCAL_DIR, LOCAL_DIR_CONFIG, split_schema

__all__ = [
    "ResolvedWeights",
    "find_cached_tag_weights",
    "model_config_dict",
    "offline_mode",
    "resolve_weights",
    "weights_available_offline",
]

logger = logging.getLogger(__name__)


def offline_mode() -> bool:
    """Whether Hugging Face offline mode is requested (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``).

    Returns
    -------
    bool
        True when either variable is truthy now, or huggingface_hub saw offline mode at import.

    Notes
    -----
    The environment is read at call time: huggingface_hub freezes its own flag at import, so a
    flag set later (e.g. by a test's monkeypatch) would otherwise be missed.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    try:
        from huggingface_hub import constants as hf_constants
    except ImportError:  # pragma: no cover - huggingface_hub is an open_clip dependency
        return False
    return bool(hf_constants.HF_HUB_OFFLINE)


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the weights of one encoder come from, settled before the model is built.

    Attributes
    ----------
    source : {"tag", "file", "hf-hub", "local-dir", "random"}
        What ``pretrained`` (or the schema of the model name) named.
    checkpoint : str or None
        The local weights file open_clip loads; None for random init.
    tag : str or None
        open_clip's canonical spelling of a pretrained tag.
    config_path : str or None
        ``open_clip_config.json`` of an ``hf-hub:`` or ``local-dir:`` model.
    preprocess : dict
        ``create_model_and_transforms`` keyword overrides (a tag's mean, std, interpolation and
        resize mode, which loading the tag's file by path would lose).
    """

    source: str
    checkpoint: str | None = None
    tag: str | None = None
    config_path: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrained_arg(self) -> str | None:
        """The ``pretrained`` argument for open_clip (schema names load their own weights)."""
        return self.checkpoint if self.source in ("tag", "file") else None

    @property
    def sha256(self) -> str | None:
        """Content hash of a local checkpoint (``file`` and ``local-dir`` sources), else None."""
        if self.source in ("file", LOCAL_DIR) and self.checkpoint is not None:
            return file_sha256(self.checkpoint)
        return None

    def model_id(self, model_name: str) -> str | None:
        """The model id (:mod:`mmgap_core.encoders.model_ids`), or None for random init."""
        if self.source == "tag":
            return tag_model_id(model_name, self.tag)
        if self.source == HF_HUB:
            return tag_model_id(model_name)
        if self.checkpoint is None:
            return None
        return checkpoint_model_id(self.id_name(model_name), self.sha256)

    def id_name(self, model_name: str) -> str:
        """The model part of the id: a ``local-dir:`` model is named by its config's content."""
        if self.source == LOCAL_DIR and self.config_path is not None:
            return f"{LOCAL_DIR}:{file_sha256(self.config_path)[:8]}"
        return model_name


def _hf_cached_file(repo_id: str, filename: str, cache_dir: str | None) -> str | None:
    """A Hub file (or open_clip's preferred safetensors twin) from the local cache only."""
    from huggingface_hub import hf_hub_download
    from open_clip import pretrained as oc_pretrained

    twins = getattr(oc_pretrained, "_get_safe_alternatives", lambda name: ())
    for name in (*twins(filename), filename):
        try:
            path = hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=True)
        except Exception as exc:  # LocalEntryNotFoundError, or a malformed repo id
            logger.debug("not in the Hugging Face cache: %s/%s (%s)", repo_id, name, exc)
            continue
        if os.path.isfile(path):
            return path
    return None


def _hf_repo_and_file(hf_hub: str) -> tuple[str, str]:
    from open_clip import pretrained as oc_pretrained

    repo_id, filename = os.path.split(hf_hub)  # open_clip's 'org/repo/file' convention
    return repo_id, filename or oc_pretrained.HF_WEIGHTS_NAME


def _url_cache_path(url: str, cache_dir: str | None) -> str:
    # Where open_clip's download_pretrained_from_url keeps a plain-URL download.
    return os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))


def find_cached_tag_weights(model_name: str, tag: str, cache_dir: str | None = None) -> str | None:
    """The local file of a pretrained tag's weights, looked up without any network access.

    Parameters
    ----------
    model_name : str
        An open_clip model name.
    tag : str
        A pretrained tag of that model.
    cache_dir : str, optional
        The download cache open_clip was given (default: Hugging Face's and ``~/.cache/clip``).

    Returns
    -------
    str or None
        The cached file, or None when the tag is unknown or its weights are not cached.
    """
    from open_clip import pretrained as oc_pretrained

    cfg = oc_pretrained.get_pretrained_cfg(model_name, tag)
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    if cfg.get("hf_hub") and oc_pretrained.has_hf_hub():
        path = _hf_cached_file(*_hf_repo_and_file(cfg["hf_hub"]), cache_dir)
        if path is not None:
            return path
    if cfg.get("url") and os.path.isfile(_url_cache_path(cfg["url"], cache_dir)):
        return _url_cache_path(cfg["url"], cache_dir)
    return None


def _where(cfg: dict, cache_dir: str | None) -> str:
    places = []
    if cfg.get("hf_hub"):
        places.append(f"Hugging Face cache for {_hf_repo_and_file(cfg['hf_hub'])[0]}")
    if cfg.get("url"):
        places.append(_url_cache_path(cfg["url"], cache_dir))
    return "; ".join(places) or "nowhere (the tag names no source)"


def _tag_weights(model_name: str, tag: str, cache_dir: str | None) -> ResolvedWeights:
    import open_clip
    from open_clip import pretrained as oc_pretrained

    cfg = oc_pretrained.get_pretrained_cfg(model_name, tag)
    path = find_cached_tag_weights(model_name, tag, cache_dir)  # cached weights never change
    if path is None and offline_mode():
        # Never call open_clip's downloader offline: its plain-URL path (urllib) ignores the flag.
        raise WeightsUnavailableError(
            f"open_clip weights {model_name}:{tag} are unavailable: offline mode is set "
            f"(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and they are not in the local cache "
            f"(looked in: {_where(cfg, cache_dir)}). Download them once while online, or pass a "
            f"local checkpoint file as `pretrained`."
        )
    if path is None:
        try:
            path = oc_pretrained.download_pretrained(cfg, cache_dir=cache_dir)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"open_clip weights {model_name}:{tag} could not be downloaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not path or not os.path.isfile(path):
            raise WeightsUnavailableError(
                f"open_clip weights {model_name}:{tag} could not be downloaded: "
                "no file was produced"
            )
    model_quick_gelu = bool(open_clip.get_model_config(model_name).get("quick_gelu", False))
    if bool(cfg.get("quick_gelu", False)) != model_quick_gelu:
        warnings.warn(
            f"QuickGELU mismatch: tag '{tag}' was trained with quick_gelu="
            f"{cfg.get('quick_gelu', False)} but '{model_name}' uses {model_quick_gelu}; "
            f"embeddings will be degraded (use the '-quickgelu' model variant).",
            UserWarning,
            stacklevel=4,
        )
    preprocess = {
        "image_mean": cfg.get("mean"),
        "image_std": cfg.get("std"),
        "image_interpolation": cfg.get("interpolation"),
        "image_resize_mode": cfg.get("resize_mode"),
    }
    return ResolvedWeights("tag", path, tag=tag, preprocess=preprocess)


def _hf_hub_weights(repo_id: str, cache_dir: str | None) -> ResolvedWeights:
    """Config + weights of an ``hf-hub:`` model, cached or downloaded; no silent random init."""
    from open_clip import pretrained as oc_pretrained

    config = _hf_cached_file(repo_id, LOCAL_DIR_CONFIG, cache_dir)
    weights = _hf_cached_file(repo_id, oc_pretrained.HF_WEIGHTS_NAME, cache_dir)
    if config is None or weights is None:
        if offline_mode():
            raise WeightsUnavailableError(
                f"open_clip model hf-hub:{repo_id} is unavailable: offline mode is set "
                f"(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and its {LOCAL_DIR_CONFIG} and weights "
                f"are not both in the local Hugging Face cache. Download them once while online."
            )
        try:
            config = oc_pretrained.download_pretrained_from_hf(
                repo_id, filename=LOCAL_DIR_CONFIG, cache_dir=cache_dir
            )
            weights = oc_pretrained.download_pretrained_from_hf(repo_id, cache_dir=cache_dir)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"open_clip model hf-hub:{repo_id} could not be downloaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return ResolvedWeights(HF_HUB, weights, config_path=config)


def _local_dir_weights(folder: str) -> ResolvedWeights:
    from open_clip import factory

    find = getattr(factory, "_find_checkpoint_in_dir", None)  # the file open_clip will load
    checkpoint = find(Path(folder)) if find is not None else None
    if checkpoint is None:
        logger.warning(
            "local-dir:%s holds no weights file: the model is randomly initialised", folder
        )
    return ResolvedWeights(LOCAL_DIR, checkpoint, config_path=str(Path(folder) / LOCAL_DIR_CONFIG))


def resolve_weights(
    model_name: str, pretrained: str | os.PathLike | None, cache_dir: str | None = None
) -> ResolvedWeights:
    """Settle which weights a model loads, downloading a tag's weights only when online.

    Parameters
    ----------
    model_name : str
        A name returned by :func:`resolve_model_name`.
    pretrained : str, os.PathLike or None
        A pretrained tag of ``model_name``, a local checkpoint file, or None for random weights.
        Ignored for ``hf-hub:``/``local-dir:`` names, which carry their own weights.
    cache_dir : str, optional
        Download cache for open_clip and Hugging Face.

    Returns
    -------
    ResolvedWeights

    Raises
    ------
    ValueError
        ``pretrained`` is neither a tag of ``model_name`` nor an existing file.
    WeightsUnavailableError
        The weights cannot be downloaded, or offline mode is set and they are not cached.
    """
    from open_clip import pretrained as oc_pretrained

    schema, identifier = split_schema(model_name)
    if schema == HF_HUB:
        return _hf_hub_weights(identifier, cache_dir)
    if schema == LOCAL_DIR:
        return _local_dir_weights(identifier)
    if pretrained is None:
        return ResolvedWeights("random")
    value = os.fspath(pretrained) if isinstance(pretrained, (str, os.PathLike)) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"pretrained: expected a tag or a file path, got {pretrained!r}")
    if oc_pretrained.is_pretrained_cfg(model_name, value):
        tag = value.lower().replace("-", "_")  # open_clip's canonical tag spelling
        return _tag_weights(model_name, tag, cache_dir)
    if os.path.isfile(value):
        return ResolvedWeights("file", value)
    tags = oc_pretrained.list_pretrained_tags_by_model(model_name)
    known = (
        f"valid tags for '{model_name}': {tags}"
        if tags
        else f"open_clip knows no pretrained tags for '{model_name}'"
    )
    raise ValueError(
        f"pretrained: '{value}' is neither a pretrained tag of '{model_name}' nor an existing "
        f"checkpoint file; {known}"
    )


def model_config_dict(model_name: str, weights: ResolvedWeights) -> dict[str, Any]:
    """open_clip's config (``embed_dim``, ``vision_cfg``, ``text_cfg``...) of a resolved model.

    Parameters
    ----------
    model_name : str
        A name returned by :func:`resolve_model_name`.
    weights : ResolvedWeights
        Its weights; ``hf-hub:``/``local-dir:`` configs are read from ``weights.config_path``.

    Returns
    -------
    dict
    """
    import open_clip

    if weights.config_path is not None:
        data = json.loads(Path(weights.config_path).read_text(encoding="utf-8"))
        return dict(data.get("model_cfg", data))
    return open_clip.get_model_config(model_name) or {}


def weights_available_offline(
    model_name: str, pretrained: str | os.PathLike | None, cache_dir: str | None = None
) -> bool:
    """Whether a model and its weights can be loaded now without any network access.

    Parameters
    ----------
    model_name : str
        As :class:`~mmgap_core.encoders.open_clip.OpenClipEncoder` takes it (``hf-hub:`` and
        ``local-dir:`` names included).
    pretrained : str, os.PathLike or None
        A pretrained tag, a local checkpoint file, or None (random weights need no files).
    cache_dir : str, optional
        The download cache the encoder would be given.

    Returns
    -------
    bool
        True for an existing checkpoint file, a ``local-dir:`` folder with its config, and a tag or
        ``hf-hub:`` repo whose files are in the local cache; False otherwise (including unknown
        names and tags).

    Notes
    -----
    Checks only weights files. A model whose text tower or tokenizer comes from Hugging Face may
    still need those files.
    """
    from open_clip import pretrained as oc_pretrained

    schema, identifier = split_schema(str(model_name).strip())
    if schema == LOCAL_DIR:
        return (Path(identifier).expanduser() / LOCAL_DIR_CONFIG).is_file()
    if schema == HF_HUB:
        return all(
            _hf_cached_file(identifier, name, cache_dir) is not None
            for name in (LOCAL_DIR_CONFIG, oc_pretrained.HF_WEIGHTS_NAME)
        )
    if pretrained is None or os.path.isfile(os.fspath(pretrained)):
        return True
    name, tag = str(model_name).strip().replace("/", "-"), os.fspath(pretrained)
    if not oc_pretrained.is_pretrained_cfg(name, tag):
        return False
    return find_cached_tag_weights(name, tag.lower().replace("-", "_"), cache_dir) is not None
