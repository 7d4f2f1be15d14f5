"""The core math works with numpy alone; the framework adapters stay out of the core."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKED = [
    "torch",
    "open_clip",
    "chromadb",
    "PIL",
    "langchain_core",
    "llama_index",
    "matplotlib",
    "tqdm",
    "scipy",
    "sklearn",
    "pydantic",
]


def test_core_imports_and_runs_with_numpy_only():
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {BLOCKED!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked in this test: {{name}}")

        sys.meta_path.insert(0, Block())
        import mmgap_core
        from mmgap_core import evaluate_embeddings, ModalityStandardizer, mine_pseudo_positives
        from mmgap_core.simulator import simulate, SimulatedEncoder
        import mmgap_core.encoders, mmgap_core.store, mmgap_core.datasets, mmgap_core.engine
        d = simulate("small-gap")
        rep = evaluate_embeddings(
            d.queries, d.corpus, d.modalities, d.qrels, methods="raw,standardize"
        )
        assert rep.value("standardize", "all", "recall@20") > 0
        print("ok")
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_core_never_imports_the_frameworks():
    offenders = []
    for path in (ROOT / "mmgap_core").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for name in ("langchain", "llama_index"):
            if f"import {name}" in text or f"from {name}" in text:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders


def test_installed_top_level_names_are_unique_to_this_project():
    import importlib.metadata

    top = importlib.metadata.distribution("mmgap").read_text("top_level.txt").split()
    assert sorted(top) == ["mmgap_core", "mmgap_langchain", "mmgap_llamaindex"]


PUBLIC = {
    "RetrievalEngine",
    "open_engine",
    "ChromaStore",
    "OpenClipEncoder",
    "ModalityStandardizer",
    "topk_per_modality",
    "mine_pseudo_positives",
    "evaluate_embeddings",
    "EvalReport",
    "METHOD_NAMES",
    "make_method",
    "Hit",
    "SearchResult",
    "IndexReport",
    "SkippedItem",
    "NotCalibratedError",
    "CalibrationFormatError",
    "NotFittedError",
    "WeightsUnavailableError",
}


def test_the_top_level_lists_what_users_build_with():
    import mmgap_core

    assert set(mmgap_core.__all__) == PUBLIC
    assert set(dir(mmgap_core)) >= PUBLIC
    for internal in ("CandidateBatch", "FusedRanking", "CenterFusion", "ModalityCandidates"):
        assert internal not in mmgap_core.__all__
        assert not hasattr(mmgap_core, internal)
    from mmgap_core.engine import RetrievalEngine, open_engine
    from mmgap_core.factory import open_engine as factory_open_engine

    assert mmgap_core.RetrievalEngine is RetrievalEngine
    assert mmgap_core.open_engine is open_engine is factory_open_engine
    assert mmgap_core.ChromaStore.__name__ == "ChromaStore"
    assert mmgap_core.OpenClipEncoder.__name__ == "OpenClipEncoder"
    with __import__("pytest").raises(AttributeError, match="has no attribute 'nope'"):
        mmgap_core.nope  # noqa: B018


def test_a_backend_name_without_its_extra_names_the_extra():
    code = textwrap.dedent("""
        import sys
        sys.modules["chromadb"] = None
        import mmgap_core
        try:
            mmgap_core.ChromaStore
        except ImportError as exc:
            print(exc)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert 'pip install "mmgap[chroma]"' in out.stdout


def _import_without(module: str, blocked: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys
        sys.modules[{blocked!r}] = None
        try:
            import {module}
        except ImportError as exc:
            print(type(exc).__name__, exc)
        else:
            print("imported")
    """)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_the_adapters_name_their_extra_when_it_is_missing():
    out = _import_without("mmgap_langchain", "langchain_core")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ImportError") and 'pip install "mmgap[langchain]"' in out.stdout
    assert len(out.stdout.strip().splitlines()) == 1
    out = _import_without("mmgap_llamaindex", "llama_index")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ImportError") and 'pip install "mmgap[llamaindex]"' in out.stdout


def test_one_lazy_helper_serves_the_packages():
    import types

    from mmgap_core._lazy import lazy_module

    pkg = types.ModuleType("fake_pkg")
    sys.modules["fake_pkg"] = pkg
    try:
        pkg.__getattr__, pkg.__dir__ = lazy_module("fake_pkg", {"dumps": "json"}, eager=["x"])
        assert pkg.__dir__() == ["dumps", "x"]
        import json

        assert pkg.__getattr__("dumps") is json.dumps
        assert pkg.__dict__["dumps"] is json.dumps  # cached: the hook runs once per name
        with __import__("pytest").raises(AttributeError):
            pkg.__getattr__("loads")
    finally:
        del sys.modules["fake_pkg"]
    for folder in (
        "mmgap_core",
        "mmgap_core/store",
        "mmgap_core/encoders",
        "integrations/mmgap_llamaindex",
    ):
        text = (ROOT / folder / "__init__.py").read_text(encoding="utf-8")
        assert "lazy_module(" in text and "def __getattr__" not in text, folder
