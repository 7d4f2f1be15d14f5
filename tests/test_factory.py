"""The factory: the one core module that names Chroma and open_clip. It opens stores, records how
the encoder was built, and rebuilds it from that record."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mmgap_core.encoders.base import encoder_spec
from mmgap_core.engine import RetrievalEngine
from mmgap_core.factory import build_encoder, open_engine, open_store
from mmgap_core.simulator import SimulatedEncoder

ROOT = Path(__file__).resolve().parents[1]
BACKEND_LIBRARIES = {"chromadb", "open_clip", "torch"}
TEXTS = ["a cat on a mat", "a cup of coffee", "a red rocket", "snowy mountains"]


def _model_kwargs(tiny_clip) -> dict:
    return {
        "model": tiny_clip.model_name,
        "pretrained": str(tiny_clip.checkpoint_path),
        "model_config": str(tiny_clip.config_path),
        "device": "cpu",
    }


def test_open_store_is_a_persistent_chroma_store(tmp_path):
    from mmgap_core.store import ChromaStore

    store = open_store(tmp_path / "db", name="fac")
    assert isinstance(store, ChromaStore) and store.counts() == {}
    store.update_manifest(note="kept")
    assert open_store(tmp_path / "db", name="fac").read_manifest()["note"] == "kept"


def test_the_encoder_is_recorded_and_rebuilt_from_its_spec(tmp_path, tiny_clip, sample_images):
    db = tmp_path / "db"
    engine = open_engine(db, name="fac", **_model_kwargs(tiny_clip))
    engine.index(texts=TEXTS, images=sample_images[:2], progress=False)
    spec = engine.store.read_manifest()["encoder"]
    assert spec == engine.encoder.spec() and spec["kind"] == "open_clip"
    assert spec["model_name"] == tiny_clip.model_name
    assert str(tmp_path) not in str(spec)  # names and hashes, never local paths

    # The recorded model is reused; the local files are named again (any byte-identical copy).
    again = open_engine(
        db,
        name="fac",
        pretrained=str(tiny_clip.checkpoint_path),
        model_config=str(tiny_clip.config_path),
        device="cpu",
    )
    assert again.encoder.model_id == engine.encoder.model_id
    assert len(again.search("a cat", method="raw", k=3)) == 3

    rebuilt = build_encoder(
        spec,
        pretrained=str(tiny_clip.checkpoint_path),
        model_config=str(tiny_clip.config_path),
        device="cpu",
    )
    assert rebuilt.model_id == engine.encoder.model_id


def test_a_recorded_local_file_must_be_named_again(tmp_path, tiny_clip):
    engine = open_engine(tmp_path / "db", name="fac", **_model_kwargs(tiny_clip))
    engine.index(texts=TEXTS, progress=False)
    with pytest.raises(ValueError, match="--pretrained PATH") as info:
        open_engine(tmp_path / "db", name="fac", device="cpu")
    assert tiny_clip.checkpoint_path.name in str(info.value)
    with pytest.raises(ValueError, match="--model-config PATH"):
        open_engine(
            tmp_path / "db", name="fac", pretrained=str(tiny_clip.checkpoint_path), device="cpu"
        )


def test_an_old_spec_with_paths_still_rebuilds(tiny_clip):
    spec = {
        "kind": "open_clip",
        "model_name": tiny_clip.model_name,
        "pretrained": str(tiny_clip.checkpoint_path),
        "model_config": str(tiny_clip.config_path),
    }
    encoder = build_encoder(spec, device="cpu")
    assert encoder.model_name == tiny_clip.model_name and encoder.dim == 32


def test_a_simulated_encoder_is_rebuilt_without_a_model(tmp_path):
    encoder = SimulatedEncoder()
    texts, images = encoder.corpus()
    engine = RetrievalEngine(open_store(tmp_path / "db", name="sim"), encoder)
    engine.index(texts=texts[:20], images=images[:20], progress=False)
    assert engine.store.read_manifest()["encoder"] == encoder.spec()
    again = open_engine(tmp_path / "db", name="sim")
    assert isinstance(again.encoder, SimulatedEncoder)
    assert again.encoder.model_id == encoder.model_id


class _NoSpec:
    """An encoder that cannot describe itself: the engine records nothing."""

    def __init__(self):
        self._inner = SimulatedEncoder()
        self.model_id, self.dim = self._inner.model_id, self._inner.dim

    def embed_texts(self, texts, **kw):
        return self._inner.embed_texts(texts, **kw)

    def embed_images(self, images, **kw):
        return self._inner.embed_images(images, **kw)


def test_an_encoder_without_spec_records_nothing(tmp_path):
    encoder = _NoSpec()
    assert encoder_spec(encoder) is None
    engine = RetrievalEngine(open_store(tmp_path / "db", name="nospec"), encoder)
    texts, _images = encoder._inner.corpus()
    assert engine.index(texts=texts[:5], progress=False).n_added == 5
    assert "encoder" not in engine.store.read_manifest()


def test_encoder_spec_calls_spec_when_there_is_one():
    class Described(_NoSpec):
        def spec(self):
            return {"kind": "custom", "name": "x"}

    class Undescribed(_NoSpec):
        def spec(self):
            return None

    assert encoder_spec(Described()) == {"kind": "custom", "name": "x"}
    assert encoder_spec(Undescribed()) is None


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports, at any depth (functions included), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno))
        elif isinstance(node, ast.Call):
            func = node.func
            name = getattr(func, "attr", getattr(func, "id", ""))
            if name in ("import_module", "__import__", "find_spec") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    out.append((arg.value, node.lineno))
    return out


def _is_backend(rel: Path) -> bool:
    parts = rel.parts
    if rel == Path("mmgap_core/factory.py"):
        return True
    if parts[:2] == ("mmgap_core", "store") and rel.name.startswith("chroma"):
        return True
    return parts[:2] == ("mmgap_core", "encoders") and rel.name not in ("base.py", "__init__.py")


def test_only_the_factory_and_the_backends_import_backend_libraries():
    offenders = []
    checked = 0
    for path in sorted((ROOT / "mmgap_core").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if _is_backend(rel):
            continue
        checked += 1
        for module, line in _imported_modules(path):
            if module.split(".")[0] in BACKEND_LIBRARIES:
                offenders.append(f"{rel}:{line} imports {module}")
    assert checked > 20
    assert not offenders, "\n".join(offenders)
