"""Model names the open_clip backend accepts, checked before anything is built.

Built-in open_clip names (``ViT-B/32`` is read as ``ViT-B-32``), names defined by a model-config
JSON file, and open_clip's own schema names: ``hf-hub:org/repo`` (config and weights on the
Hugging Face Hub) and ``local-dir:/path/to/folder`` (a folder holding ``open_clip_config.json``
with a ``model_cfg`` object, and a weights file open_clip picks: ``*.safetensors``, ``*.bin`` or
``*.pth``). open_clip is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "HF_HUB",
    "LOCAL_DIR",
    "LOCAL_DIR_CONFIG",
    "register_model_config",
    "resolve_model_name",
    "split_schema",
]

#: open_clip's schema prefixes (without the colon).
HF_HUB, LOCAL_DIR = "hf-hub", "local-dir"
#: The config file of an ``hf-hub:`` repo or a ``local-dir:`` folder.
LOCAL_DIR_CONFIG = "open_clip_config.json"


def split_schema(model_name: str) -> tuple[str | None, str]:
    """``("hf-hub" | "local-dir" | None, identifier)`` of a model name, like open_clip parses it."""
    for schema in (HF_HUB, LOCAL_DIR):
        if model_name.startswith(schema + ":"):
            return schema, model_name[len(schema) + 1 :].strip()
    return None, model_name


def register_model_config(model_name: str, config_path: str | os.PathLike) -> None:
    """Make ``model_name`` resolvable by open_clip from a model-config JSON file.

    Parameters
    ----------
    model_name : str
        The name the file defines; open_clip names a config after its file stem.
    config_path : str or os.PathLike
        ``<model_name>.json`` with open_clip's ``embed_dim``, ``vision_cfg`` and ``text_cfg``.

    Raises
    ------
    ValueError
        Missing or unreadable file, wrong name, or missing keys.
    """
    import open_clip

    path = Path(config_path)
    if not path.is_file():
        raise ValueError(f"model_config: file not found: '{path}'")
    if path.suffix != ".json":
        raise ValueError(f"model_config: expected a .json file, got '{path.name}'")
    if path.stem != model_name:
        raise ValueError(
            f"model_config: open_clip names a config after its file, so '{path.name}' defines "
            f"model '{path.stem}', not '{model_name}'; rename the file to '{model_name}.json'"
        )
    cfg = _read_json(path, "model_config")
    required = ("embed_dim", "vision_cfg", "text_cfg")
    missing = [k for k in required if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise ValueError(f"model_config: '{path}' lacks required open_clip keys {missing}")
    if open_clip.get_model_config(model_name) != cfg:
        # Re-adding appends the path last, so this file wins over an earlier one with the same stem.
        open_clip.add_model_config(path)
    if open_clip.get_model_config(model_name) != cfg:  # pragma: no cover - open_clip changed
        raise RuntimeError(f"model_config: open_clip did not register '{path}' as '{model_name}'")


def _read_json(path: Path, option: str) -> Any:
    """The JSON in ``path``; ``ValueError`` naming ``option`` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{option}: cannot read '{path}' as JSON ({exc})") from exc


def _check_local_dir(folder: str) -> str:
    path = Path(folder).expanduser()
    config = path / LOCAL_DIR_CONFIG
    if not path.is_dir():
        raise ValueError(f"model_name: 'local-dir:{folder}' is not a folder")
    if not config.is_file():
        raise ValueError(
            f"model_name: 'local-dir:{folder}' lacks {LOCAL_DIR_CONFIG} (open_clip reads the "
            f"model from that file and a weights file beside it)"
        )
    data = _read_json(config, "model_name")
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        raise ValueError(f"model_name: '{config}' lacks the 'model_cfg' object open_clip needs")
    return f"{LOCAL_DIR}:{path.resolve()}"


def resolve_model_name(model_name: str, model_config: str | os.PathLike | None = None) -> str:
    """Check a model name and return the form open_clip is given.

    Parameters
    ----------
    model_name : str
        A built-in open_clip name (``ViT-B/32`` is read as ``ViT-B-32``), the name a
        ``model_config`` file defines, ``hf-hub:org/repo`` or ``local-dir:/path/to/folder``.
    model_config : str or os.PathLike, optional
        ``<model_name>.json`` defining a custom architecture (plain names only).

    Returns
    -------
    str
        The canonical name; a ``local-dir:`` folder becomes absolute.

    Raises
    ------
    ValueError
        Unknown name (with close matches), bad folder, or ``model_config`` with a schema name.
    """
    import difflib

    import open_clip

    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(f"model_name: expected a non-empty str, got {model_name!r}")
    schema, identifier = split_schema(model_name.strip())
    if schema is not None:
        if model_config is not None:
            raise ValueError(
                f"model_config: '{schema}:' model names carry their own config; drop model_config"
            )
        if not identifier:
            raise ValueError(f"model_name: nothing after '{schema}:'")
        return f"{HF_HUB}:{identifier}" if schema == HF_HUB else _check_local_dir(identifier)
    name = model_name.strip().replace("/", "-")  # open_clip accepts 'ViT-B/32' this way
    if model_config is not None:
        register_model_config(name, model_config)
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"model_name: unknown open_clip model '{name}'.{hint} Valid names are listed by "
            f"open_clip.list_models() (tags per model: open_clip.list_pretrained()); for a custom "
            f"architecture pass model_config='<path>/{name}.json', or name a folder with "
            f"'local-dir:<path>' or a Hub repo with 'hf-hub:<org>/<repo>'."
        )
    return name
