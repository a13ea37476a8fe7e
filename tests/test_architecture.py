"""The dependency direction of STYLE.md, held by parsing imports: data at the bottom, the
pure cost model above it, mechanism beside it, the facade on top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "amorsize_executor"

LAYERS = {
    "_records": "data",
    "_errors": "data",
    "_cost_model": "policy",
    "_serial_watch": "policy",
    "_input": "mechanism",
    "_probe": "mechanism",
    "_system_facts": "mechanism",
    "_start_cost_cache": "mechanism",
    "_chunk_worker": "mechanism",
    "_fn_transport": "mechanism",
    "_close_gate": "mechanism",
    "_pool_backend": "mechanism",
    "_shared_pools": "mechanism",
    "_dask_backend": "mechanism",
    "_thread_backend": "mechanism",
    "_map_run": "facade",
    "_fn_for_workers": "facade",
    "_executor": "facade",
    "_cli": "facade",
    "__main__": "facade",
    "__init__": "facade",
}

ALLOWED = {
    "data": {"data"},
    "policy": {"data"},
    # Backends submit the worker-side entry point, which every backend shares, and close
    # through the same gate.
    "mechanism": {"data", "_chunk_worker", "_close_gate"},
    "facade": {"data", "policy", "mechanism", "facade", "_chunk_worker", "_close_gate"},
}

# Named exceptions within a layer: the shared warm pool is a PoolBackend (a subclass); a
# worker loads a large fn through the transport that shipped it.
MODULE_ALLOWED = {"_shared_pools": {"_pool_backend"}, "_chunk_worker": {"_fn_transport"}}

# No clock, no file, no process, no environment in the policy layer.
POLICY_FORBIDDEN = {
    "time",
    "os",
    "subprocess",
    "multiprocessing",
    "psutil",
    "loky",
    "pathlib",
    "threading",
    "random",
}


def our_imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules of ours, top-level third-party/stdlib modules) imported by ``path``."""
    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.module:
                    ours.add(node.module.split(".")[0])
                else:
                    # ``from . import x``: only names that are modules of ours count.
                    ours.update(
                        a.name for a in node.names if (path.parent / f"{a.name}.py").exists()
                    )
            elif node.module:
                target = ours if node.module.startswith("amorsize_executor") else others
                target.add(
                    node.module.split(".")[-1] if target is ours else node.module.split(".")[0]
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                others.add(alias.name.split(".")[0])
    return ours, others


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules <= set(LAYERS), f"give these a layer: {modules - set(LAYERS)}"


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py")))
def test_imports_point_down(module: str) -> None:
    layer = LAYERS[module]
    ours, others = our_imports(PACKAGE / f"{module}.py")
    for imported in ours:
        imported_layer = LAYERS.get(imported, imported)
        allowed = ALLOWED[layer] | MODULE_ALLOWED.get(module, set())
        assert imported_layer in allowed or imported in allowed, (
            f"{module} ({layer}) must not import {imported} ({imported_layer})"
        )
    if layer == "policy":
        assert not others & POLICY_FORBIDDEN, f"{module} imports {others & POLICY_FORBIDDEN}"


def test_the_checker_itself_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from ._executor import AdaptiveProcessPoolExecutor\nimport time\n")
    ours, others = our_imports(bad)
    assert ours == {"_executor"} and "time" in others
