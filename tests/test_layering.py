"""Imports point downward only (tools -> txn -> paxos -> mvcc -> hlc), the pure
modules touch no I/O, and plyvel is imported in exactly one module."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ("hlc", "mvcc", "paxos", "txn", "tools")  # bottom to top
RANK = {name: rank for rank, name in enumerate(LAYERS)}

# Modules that must stay free of I/O: add each pure module here as it lands.
PURE_MODULES = (
    "hlc/timestamp.py",
    "hlc/clock.py",
    "hlc/durations.py",
    "hlc/offsets.py",
    "txn/wire.py",
    "txn/commands.py",
    "txn/tablet.py",
    "txn/checkers.py",
    "txn/api.py",
    "mvcc/engine.py",
    "paxos/messages.py",
    "paxos/quorum.py",
    "paxos/types.py",
    "paxos/replica.py",
    "paxos/checkers.py",
    "mvcc/keys.py",
    "mvcc/records.py",
    "mvcc/gc.py",
    "mvcc/snapshot.py",
    "mvcc/store.py",
    "mvcc/visible.py",
)
FORBIDDEN_IN_PURE = {"trio", "plyvel", "socket", "time", "threading", "random", "asyncio", "os", "subprocess"}
PLYVEL_HOME = "mvcc/engine_leveldb.py"


def imported_modules(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def layer_files() -> list[pathlib.Path]:
    return sorted(path for layer in LAYERS for path in (ROOT / layer).rglob("*.py"))


def test_every_layer_exists_and_has_files() -> None:
    for layer in LAYERS:
        assert (ROOT / layer / "__init__.py").is_file(), layer


@pytest.mark.parametrize("path", layer_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_downward(path: pathlib.Path) -> None:
    own = RANK[path.relative_to(ROOT).parts[0]]
    for name in imported_modules(path):
        top = name.split(".")[0]
        if top in RANK:
            assert RANK[top] <= own, f"{path.relative_to(ROOT)} imports {name}: {top} is above {LAYERS[own]}"


@pytest.mark.parametrize("relative", PURE_MODULES)
def test_pure_modules_do_no_io(relative: str) -> None:
    path = ROOT / relative
    assert path.is_file(), f"listed pure module {relative} is missing"
    for name in imported_modules(path):
        assert name.split(".")[0] not in FORBIDDEN_IN_PURE, f"pure module {relative} imports {name}"


def test_plyvel_is_imported_in_one_module_only() -> None:
    importers = [
        str(path.relative_to(ROOT))
        for path in layer_files()
        if any(name.split(".")[0] == "plyvel" for name in imported_modules(path))
    ]
    assert importers in ([], [PLYVEL_HOME]), importers
