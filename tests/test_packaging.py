"""The package declares what it imports, and the docs import only public names."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import amorsize_executor

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "amorsize_executor"

DISTRIBUTION_OF = {"distributed": "distributed"}
"""Import names whose distribution is named otherwise (none differ today but the table
says where such a name would go)."""


def _third_party_imports() -> set[str]:
    names: set[str] = set()
    for path in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names)
    return {name for name in names if name not in stdlib and name != "amorsize_executor"}


def _declared_distributions() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = text[text.index("[project]") : text.index("[project.scripts]")]
    return {
        re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in re.findall(r'^\s*"([A-Za-z0-9_.\-\[\]]+[^"]*)",?$', project, re.M)
    }


def test_every_imported_third_party_module_is_declared() -> None:
    declared = _declared_distributions()
    imported = {
        DISTRIBUTION_OF.get(name, name).replace("_", "-") for name in _third_party_imports()
    }
    assert "cloudpickle" in imported
    assert imported <= declared, f"imported but not declared: {sorted(imported - declared)}"


def test_the_docs_import_only_public_names() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    n_imports = 0
    for doc in docs:
        for line in doc.read_text(encoding="utf-8").splitlines():
            if not re.match(r"\s*from amorsize_executor\S* import ", line):
                continue
            statement = ast.parse(line.strip().rstrip("\\").rstrip("(")).body[0]
            assert isinstance(statement, ast.ImportFrom)
            assert statement.module == "amorsize_executor", f"{doc.name}: private: {line}"
            for alias in statement.names:
                n_imports += 1
                assert alias.name in amorsize_executor.__all__, f"{doc.name}: {alias.name}"
    assert n_imports >= 10
