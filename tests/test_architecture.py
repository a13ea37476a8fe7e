"""The shape of the package, held by parsing it: the dependency direction of STYLE.md (data
at the bottom, the pure policy above it, mechanism beside it, the rooms of one ``map()`` run
above those, the facade on top) and the size limits that keep each module one job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "amorsize_executor"

LAYERS = {
    "_records": "data",
    "_errors": "data",
    "_cost_model": "policy",
    "_worker_policy": "policy",
    "_steering": "policy",
    "_early_start": "policy",
    "_serial_reasons": "policy",
    "_fn_cost": "policy",
    "_serial_watch": "policy",
    "_after_shutdown": "policy",
    "_contention": "policy",
    "_input": "mechanism",
    "_arg_copies": "mechanism",
    "_probe": "mechanism",
    "_probe_calls": "mechanism",
    "_probe_figures": "mechanism",
    "_meters": "mechanism",
    "_system_facts": "mechanism",
    "_cgroup_text": "mechanism",
    "_start_cost_cache": "mechanism",
    "_machine": "mechanism",
    "_chunk_worker": "mechanism",
    "_chunk_io": "mechanism",
    "_fn_transport": "mechanism",
    "_fn_for_workers": "mechanism",
    "_close_gate": "mechanism",
    "_interpreter_exit": "mechanism",
    "_progress": "mechanism",
    "_backend": "mechanism",
    "_start_method": "mechanism",
    "_worker_streams": "mechanism",
    "_worker_memory": "mechanism",
    "_openblas_maps": "mechanism",
    "_mp_objects": "mechanism",
    "_pool_backend": "mechanism",
    "_recycling_pool": "mechanism",
    "_pool_futures": "mechanism",
    "_start_recorder": "mechanism",
    "_shared_pools": "mechanism",
    "_dask_backend": "mechanism",
    "_dask_facts": "mechanism",
    "_thread_backend": "mechanism",
    "_planning": "run",
    "_chunk_window": "run",
    "_serial_run": "run",
    "_worker_probe": "run",
    "_map_run": "facade",
    "_run_probe": "facade",
    "_start_choice": "facade",
    "_executor": "facade",
    "_executor_options": "facade",
    "_cli": "facade",
    "__main__": "facade",
    "__init__": "facade",
}
"""The layer of each module; a package's modules (``_cli._doctor``) share its layer."""

ALLOWED = {
    "data": {"data"},
    "policy": {"data", "policy"},
    # Backends submit the worker-side entry point, which every backend shares, close
    # through the same gate, and implement the one contract.
    "mechanism": {"data", "_chunk_worker", "_close_gate", "_backend", "_chunk_io"},
    # The rooms of one map() run: each is handed numbers, callables and clocks, and none
    # imports another (``_map_run`` wires them), so each can be read and tested alone.
    "run": {"data", "policy", "mechanism"},
    "facade": {"data", "policy", "mechanism", "run", "facade"},
}

# Named exceptions within a layer: the shared warm pool is a PoolBackend (a subclass), the
# facts of a backend are assembled from the system facts and the start-cost cache, and the
# dask backend reports what its cluster's facts module reads, and the system facts read
# the files whose text the cgroup parsers turn into numbers, and a process pool's fastest
# start is the smallest of the start-cost priors, the probe reads the meters of a call and
# hands its calls' results on through _probe_calls and adds up their figures in
# _probe_figures, and
# the pool backend gives its futures the stdlib's semantics (_pool_futures) and runs
# max_tasks_per_child on a stdlib pool that replaces its workers (_recycling_pool) and
# records its start cost off its threads (_start_recorder), the
# worker's entry point keeps crash reports working under an in-memory stderr and loads
# a large fn through the transport that shipped it, which the run's FnForWorkers drives,
# and fn's arguments in the caller are copies read through the input layer's Source.
MODULE_ALLOWED = {
    "_shared_pools": {"_pool_backend"},
    "_machine": {"_system_facts", "_start_cost_cache"},
    "_dask_backend": {"_dask_facts"},
    "_system_facts": {"_cgroup_text"},
    "_pool_backend": {"_system_facts", "_pool_futures", "_recycling_pool", "_start_recorder"},
    "_probe": {"_meters", "_probe_calls", "_probe_figures"},
    "_arg_copies": {"_input"},
    "_chunk_worker": {"_worker_streams", "_worker_memory", "_fn_transport", "_openblas_maps"},
    "_fn_for_workers": {"_fn_transport"},
}

# Inside the CLI package: shared pieces at the bottom, one module per command above them,
# the parser above the commands, the entry point on top. A command never imports the parser
# or another command, except that ``explain`` shows the machine the way ``doctor`` does.
CLI_ALLOWED = {
    "_cli._common": set(),
    "_cli._reports": {"_cli._common"},
    "_cli._doctor": {"_cli._common", "_cli._reports"},
    "_cli._explain": {"_cli._common", "_cli._reports", "_cli._doctor"},
    "_cli._parser": {"_cli._common", "_cli._doctor", "_cli._explain"},
    "_cli": {"_cli._common", "_cli._parser"},
}

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

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 350
MAX_FUNCTION_LINES = 100

OVER_THE_LIMITS: dict[str, int] = {}
"""Known debts, each at most its size today, so they can only shrink (none is left: the
executor's constructor, the last one, now hands its checks to ``_executor_options``). Remove
an entry once it is under the limit."""


def module_name(path: Path) -> str:
    """``_cli/_doctor.py`` -> ``_cli._doctor``; ``_cli/__init__.py`` -> ``_cli``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    return LAYERS[module.split(".")[0]]


def our_imports(path: Path, root: Path = PACKAGE) -> tuple[set[str], set[str]]:
    """(modules of ours, as ``module_name`` spells them; top-level third-party/stdlib
    modules) imported by ``path``, a file under the package ``root``."""
    ours: set[str] = set()
    others: set[str] = set()
    here = path.parent
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.parent
                prefix = ".".join(base.relative_to(root).parts)
                if node.module:
                    name = node.module.split(".")[0]
                    ours.add(f"{prefix}.{name}" if prefix else name)
                else:
                    # ``from . import x``: only names that are modules of ours count.
                    for alias in node.names:
                        if (base / f"{alias.name}.py").exists() or (base / alias.name).is_dir():
                            ours.add(f"{prefix}.{alias.name}" if prefix else alias.name)
            elif node.module:
                if node.module.startswith("amorsize_executor"):
                    ours.add(node.module.split(".")[-1])
                else:
                    others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                others.add(alias.name.split(".")[0])
    return ours, others


def test_every_module_has_a_layer() -> None:
    tops = {name.split(".")[0] for name in all_modules()}
    assert tops <= set(LAYERS), f"give these a layer: {tops - set(LAYERS)}"


@pytest.mark.parametrize("module", sorted(all_modules()))
def test_imports_point_down(module: str) -> None:
    layer = layer_of(module)
    ours, others = our_imports(all_modules()[module])
    package = module.split(".")[0]
    for imported in ours:
        if imported.split(".")[0] == package and "." in module + imported:
            # Within a package: its own graph.
            allowed_here = CLI_ALLOWED.get(module, set())
            assert imported in allowed_here, f"{module} must not import {imported}"
            continue
        if imported == "amorsize_executor":
            continue  # ``import amorsize_executor`` for its version
        imported_layer = layer_of(imported)
        allowed = ALLOWED[layer] | MODULE_ALLOWED.get(module, set())
        assert imported_layer in allowed or imported in allowed, (
            f"{module} ({layer}) must not import {imported} ({imported_layer})"
        )
    if layer == "policy":
        assert not others & POLICY_FORBIDDEN, f"{module} imports {others & POLICY_FORBIDDEN}"


def test_the_cli_graph_names_every_cli_module() -> None:
    cli = {name for name in all_modules() if name.split(".")[0] == "_cli"}
    assert cli == set(CLI_ALLOWED)


def test_the_checker_itself_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from ._executor import AdaptiveProcessPoolExecutor\nimport time\n")
    ours, others = our_imports(bad, root=tmp_path)
    assert ours == {"_executor"} and "time" in others
    (tmp_path / "_cost_model.py").write_text("")
    (tmp_path / "_cli").mkdir()
    inner = tmp_path / "_cli" / "_doctor.py"
    inner.write_text("from .. import _cost_model\nfrom ._parser import x\n")
    assert our_imports(inner, root=tmp_path)[0] == {"_cost_model", "_cli._parser"}


def sizes(path: Path, module: str) -> dict[str, int]:
    """Lines of the module and of each class and function in it, by dotted name."""
    text = path.read_text()
    found = {module: len(text.splitlines())}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                assert child.end_lineno is not None
                found[name] = child.end_lineno - child.lineno + 1
                visit(child, name)

    visit(ast.parse(text), module)
    return found


def limit_of(name: str, node_kind: str) -> int:
    if name in OVER_THE_LIMITS:
        return OVER_THE_LIMITS[name]
    return {"module": MAX_MODULE_LINES, "class": MAX_CLASS_LINES}.get(
        node_kind, MAX_FUNCTION_LINES
    )


@pytest.mark.parametrize("module", sorted(all_modules()))
def test_modules_classes_and_functions_stay_small(module: str) -> None:
    path = all_modules()[module]
    tree = ast.parse(path.read_text())
    classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    for name, n_lines in sizes(path, module).items():
        last = name.split(".")[-1]
        kind = "module" if name == module else "class" if last in classes else "function"
        limit = limit_of(name, kind)
        assert n_lines <= limit, (
            f"{name} has {n_lines} lines, over the {limit} a {kind} may have: split it "
            "(see the README's architecture section for where its parts belong)"
        )


def test_the_size_check_itself_sees_a_long_function(tmp_path: Path) -> None:
    long = tmp_path / "long.py"
    long.write_text("class C:\n    def f(self):\n" + "        x = 1\n" * 120)
    found = sizes(long, "long")
    assert found["long.C.f"] == 121 and found["long.C"] == 122


def test_every_known_debt_is_still_over_the_limit() -> None:
    # An entry whose code shrank below the limit must go: the list only ever shrinks.
    every = {}
    for module, path in all_modules().items():
        every.update(sizes(path, module))
    for name, recorded in OVER_THE_LIMITS.items():
        assert name in every, f"{name} no longer exists: remove it from OVER_THE_LIMITS"
        limit = MAX_MODULE_LINES if "." not in name else MAX_FUNCTION_LINES
        assert every[name] > limit, f"{name} is within the limits now: remove its entry"
        assert every[name] <= recorded
