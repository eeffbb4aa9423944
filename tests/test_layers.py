"""The layers hold: nothing imports upwards (docs/architecture.md).

From the bottom: components -> the run-record layer (`bnr.runs`) -> plug-ins (`bnr.defenses`, `bnr.attacks`,
`bnr.toy`) -> orchestration (`bnr.orchestrate`) -> recipes (`bnr.recipes`) and the service (`bnr.service`). The
check reads every module's imports (top level and inside functions) from its source, so a lazy import counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bnr"
# bnr.integrations: pieces for the user's own training loop (TRL), over the orchestration layer
TOP = ("bnr.recipes", "bnr.service", "bnr.integrations", "bnr.cli", "bnr.__main__")
ORCHESTRATION = ("bnr.orchestrate",)
PLUGINS = ("bnr.defenses", "bnr.attacks", "bnr.toy")
RUNS = ("bnr.runs",)
# the CLI and the plug-in loader are where plug-ins are named and imported, once
PLUGIN_LOADERS = ("bnr.cli", "bnr.plugins")  # bnr.plugins names them by string (importlib)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every `bnr...` module the file imports, at any depth (a `from bnr import x` counts as `bnr.x`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bnr"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("bnr"):
            found.add(node.module)
            if node.module == "bnr":
                found.update(f"bnr.{a.name}" for a in node.names)
    return found


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _layer(module: str) -> int:
    """0 components, 1 run records, 2 plug-ins, 3 orchestration, 4 recipes / service / CLI."""
    for rank, packages in ((4, TOP), (3, ORCHESTRATION), (2, PLUGINS), (1, RUNS)):
        if _in(module, packages):
            return rank
    return 0


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _violations(allowed: object) -> list[str]:
    out = []
    for name, path in MODULES.items():
        for imported in sorted(_imports(path)):
            if not allowed(name, imported):  # type: ignore[operator]
                out.append(f"{name} imports {imported}")
    return out


def test_nothing_below_orchestration_imports_recipes_orchestration_or_the_service() -> None:
    bad = _violations(lambda me, it: _layer(me) >= 3 or not _in(it, TOP + ORCHESTRATION))
    assert not bad, "modules below the orchestration layer import upwards:\n" + "\n".join(bad)


def test_no_module_imports_a_higher_layer() -> None:
    bad = _violations(
        lambda me, it: _layer(it) <= _layer(me) or (_in(me, PLUGIN_LOADERS) and _in(it, PLUGINS)),
    )
    assert not bad, "imports against the layers (components -> runs -> plug-ins -> orchestrate -> recipes):\n" + (
        "\n".join(bad)
    )


def test_core_modules_never_import_the_toy_world() -> None:
    """Core = components, run records, orchestration; the toy world's own commands (`bnr demo`, `bnr toy-build`)
    are recipes above it."""
    bad = _violations(lambda me, it: _layer(me) in (2, 4) or not _in(it, ("bnr.toy",)))
    assert not bad, "core modules name the toy world (it registers itself as a plug-in):\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("me", "it", "ok"),
    [("bnr.defenses.bnr", "bnr.recipes.merge", False), ("bnr.recipes.merge", "bnr.runs.merge", True)],
)
def test_the_check_sees_a_violation(me: str, it: str, ok: bool) -> None:
    assert (_layer(it) <= _layer(me)) is ok
