"""kvdicom's shape: packages by concern, no import cycles, no import hidden in a function to dodge one, a
public top level, and nothing of the suite or of optional integrations pulled in by ``import kvdicom``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kvdicom

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kvdicom"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> kvdicom modules it imports at top level, 'module:line' of kvdicom imports inside functions)."""
    graph, inner = {}, []
    for name, path in modules.items():
        deps = set()
        tree = ast.parse(path.read_text())
        # a module-level ``try: from kvdicom... import`` (an optional compiled part) is a top-level import
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                         ast.ClassDef, ast.Lambda))
                        for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kvdicom":
                if id(node) in in_functions:
                    inner.append(f"{name}:{node.lineno}")
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "kvdicom" for a in node.names):
                if id(node) in in_functions:
                    inner.append(f"{name}:{node.lineno}")
                deps.update(a.name for a in node.names if a.name in modules)
        graph[name] = {d for d in deps if d in modules and d not in (name, "kvdicom")}
    return graph, inner


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_import_cycles_and_no_imports_inside_functions():
    graph, inner = _imports(_modules())
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert inner == [], f"kvdicom imports inside functions: {inner}"


def test_the_top_level_holds_the_public_api_and_internals_are_named_so():
    assert sorted(kvdicom.__all__) == sorted([
        "CompressedLayout", "DicomLoadError", "GpuUnavailableError", "PixelLayout", "SeriesInfo", "Settings",
        "configure", "inspect", "load", "load_series"])
    public_modules = {"errors", "settings", "monai", "dask"}
    for path in PACKAGE.iterdir():
        name = path.stem if path.suffix == ".py" else path.name
        if name.startswith("__") or (path.is_dir() and not (path / "__init__.py").exists()):
            continue
        assert name in public_modules or name.startswith("_"), f"kvdicom.{name} is neither public API nor internal"


def test_import_kvdicom_loads_nothing_of_the_suite_or_the_optional_integrations():
    code = ("import sys, kvdicom; heavy = [m for m in ('dgbench', 'bench', 'fixtures', 'monai', 'torch', 'dask', "
            "'distributed', 'cupy', 'kvikio', 'matplotlib') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
