"""The README's LangChain and LlamaIndex sections import only what their install line installs.

Each section names its install command (``pip install "mmgap[langchain,clip,chroma]"``); every
module its python blocks import must come from the standard library, from mmgap itself, or from a
distribution that one of those extras requires directly in ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
OWN = {"mmgap_core", "mmgap_langchain", "mmgap_llamaindex"}
SECTIONS = [("## LangChain", "## LlamaIndex"), ("## LlamaIndex", "## Reproducing")]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extras() -> dict[str, set[str]]:
    """Extra -> normalised distribution names it requires, ``mmgap[...]`` references resolved."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    raw = table["project"]["optional-dependencies"]

    def resolve(extra: str, seen: frozenset = frozenset()) -> set[str]:
        out: set[str] = set()
        for req in raw[extra]:
            name = re.match(r"[A-Za-z0-9._-]+", req).group(0)
            inner = re.match(r"mmgap\[([^\]]+)\]", req)
            if inner:
                for sub in inner.group(1).split(","):
                    if sub not in seen:
                        out |= resolve(sub.strip(), seen | {extra})
            else:
                out.add(_norm(name))
        return out

    return {extra: resolve(extra) for extra in raw}


def _section(start: str, end: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index(start) : text.index(end)]


def _imports(code: str) -> set[str]:
    """Full dotted names of the modules ``code`` imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _distributions_of(module: str) -> set[str]:
    """Normalised names of the installed distributions that ship ``module``'s file.

    By file, not by top-level name: ``llama_index`` is a namespace many distributions share.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return set()
    origin = Path(spec.origin).resolve()
    top = module.split(".")[0]
    out = set()
    for name in importlib.metadata.packages_distributions().get(top, []):
        dist = importlib.metadata.distribution(name)
        if any(Path(dist.locate_file(f)).resolve() == origin for f in dist.files or []):
            out.add(_norm(name))
    return out


def test_extras_name_the_integrations_dependencies():
    extras = _extras()
    assert {"langchain-core", "langchain-classic", "langchain-chroma"} <= extras["langchain"]
    assert {"llama-index-core", "llama-index-vector-stores-chroma"} <= extras["llamaindex"]


@pytest.mark.parametrize("start,end", SECTIONS, ids=["langchain", "llamaindex"])
def test_readme_imports_come_from_its_install_line(start, end):
    section = _section(start, end)
    install = re.search(r'pip install "mmgap\[([^\]]+)\]"', section)
    assert install, f"the {start!r} section names no install command"
    extras = _extras()
    allowed: set[str] = set()
    for extra in install.group(1).split(","):
        allowed |= extras[extra.strip()]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks
    modules = {
        m
        for m in set().union(*(_imports(b) for b in blocks))
        if m.split(".")[0] not in OWN | set(sys.stdlib_module_names)
    }
    missing = {}
    for module in sorted(modules):
        dists = _distributions_of(module)
        if not dists & allowed:
            missing[module] = sorted(dists) or ["not installed"]
    assert not missing, (
        f'{start}: README imports {missing}, which `pip install "mmgap[{install.group(1)}]"` '
        "does not install"
    )
