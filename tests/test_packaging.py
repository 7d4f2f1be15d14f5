"""The core math works with numpy alone; the framework adapters stay out of the core."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKED = ["torch", "open_clip", "chromadb", "PIL", "langchain_core", "llama_index", "matplotlib", "tqdm",
           "scipy", "sklearn", "pydantic"]


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
        rep = evaluate_embeddings(d.queries, d.corpus, d.modalities, d.qrels, methods="raw,standardize")
        assert rep.value("standardize", "all", "recall@20") > 0
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
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
