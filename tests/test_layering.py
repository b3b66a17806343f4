"""Imports point downward only, pure modules reach no I/O by any path, plyvel lives in one module.

The order, bottom to top (a module may import its own rank or below):

    hlc < mvcc < paxos < txn.wire < txn.net < txn.api < txn.tablet < txn.node < txn.client < txn.sim < tools

Imports are followed transitively, including the package `__init__`s that
Python runs on the way (importing `txn.api.client` runs `txn/__init__.py` and
`txn/api/__init__.py` first). Imports inside `if TYPE_CHECKING:` do not run
and are not followed; imports inside functions are (they run when called).

Each rule is checked on the real tree, and on small made-up trees where it
must fail (tests named `test_checker_catches_*`), so a checker that stopped
looking would be noticed.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Iterable

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOP_LEVEL = ("hlc", "mvcc", "paxos", "txn", "tools")
RANKS = (
    "hlc", "mvcc", "paxos",
    "txn.wire", "txn.net", "txn.api", "txn.tablet", "txn.node", "txn.client", "txn.sim",
    "tools",
)

# Modules that must stay free of I/O, by any import path. (txn/client/routing.py
# is I/O-free itself, but its package's __init__ exports the trio client, so
# importing it reaches trio: it is not listed.)
PURE_MODULES = (
    "hlc/timestamp.py",
    "hlc/clock.py",
    "hlc/durations.py",
    "hlc/offsets.py",
    "mvcc/engine.py",
    "mvcc/keys.py",
    "mvcc/records.py",
    "mvcc/gc.py",
    "mvcc/snapshot.py",
    "mvcc/store.py",
    "mvcc/visible.py",
    "paxos/messages.py",
    "paxos/quorum.py",
    "paxos/types.py",
    "paxos/replica.py",
    "paxos/checkers.py",
    "txn/wire/type_ids.py",
    "txn/wire/codec.py",
    "txn/wire/frames.py",
    "txn/wire/envelope.py",
    "txn/wire/paxos.py",
    "txn/net/peer_rules.py",
    "txn/net/options.py",
    "txn/api/client.py",
    "txn/api/admin.py",
    "txn/api/peer.py",
    "txn/api/errors.py",
    "txn/api/cluster.py",
    "txn/api/txn.py",
    "txn/api/permissions.py",
    "txn/tablet/commands.py",
    "txn/tablet/state.py",
    "txn/tablet/leader.py",
    "txn/tablet/locks.py",
    "txn/tablet/txn_records.py",
    "txn/tablet/compaction.py",
    "txn/sim/checkers.py",
    "tools/verify_register.py",
    "tools/verify_txn.py",
    "tools/verify_bank_check.py",
    "tools/flamegraph.py",
)
FORBIDDEN_IN_PURE = frozenset({"trio", "plyvel", "socket", "time", "threading", "random", "asyncio", "os", "subprocess"})
PLYVEL_HOME = "mvcc.engine_leveldb"


# ---------------------------------------------------------------- the import graph


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(source: str, name: str, is_package: bool) -> list[str]:
    """Every module `source` imports when it runs (absolute names), TYPE_CHECKING blocks excluded."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            found.append(base)
            # `from pkg import sub` may name a submodule: offer both, the graph keeps what exists.
            found.extend(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


class ImportGraph:
    """Modules of a source tree and what each one runs when imported."""

    def __init__(self, sources: dict[str, tuple[str, bool]]) -> None:
        # sources: module name -> (source text, is a package)
        self.modules = set(sources)
        self.direct: dict[str, set[str]] = {}
        self.external: dict[str, set[str]] = {}
        for name, (source, is_package) in sources.items():
            internal, external = set(), set()
            for imported in imports_of(source, name, is_package):
                if imported.split(".")[0] in TOP_LEVEL or imported in self.modules:
                    if imported in self.modules:
                        internal.add(imported)
                else:
                    external.add(imported.split(".")[0])
            self.direct[name] = internal
            self.external[name] = external

    @classmethod
    def from_tree(cls, root: pathlib.Path) -> "ImportGraph":
        sources = {}
        for top in TOP_LEVEL:
            for path in sorted((root / top).rglob("*.py")):
                sources[module_name(path, root)] = (path.read_text(), path.name == "__init__.py")
        return cls(sources)

    def runs(self, name: str) -> set[str]:
        """`name` plus every package __init__ Python executes to import it."""
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & self.modules

    def closure(self, name: str) -> dict[str, list[str]]:
        """Every module reached by importing `name`, with one import path to it."""
        paths: dict[str, list[str]] = {}
        stack = [(m, [m]) for m in sorted(self.runs(name))]
        while stack:
            module, path = stack.pop()
            if module in paths:
                continue
            paths[module] = path
            for imported in sorted(self.direct.get(module, ())):
                for step in sorted(self.runs(imported)):
                    if step not in paths:
                        stack.append((step, path + [step]))
        return paths


def rank_of(module: str) -> int:
    """The rank of the longest prefix in RANKS that contains `module` (-1: none; `txn` itself: txn.wire)."""
    if module == "txn":
        return RANKS.index("txn.wire")  # the package docstring only: below every sub-layer
    matches = [(len(prefix), index) for index, prefix in enumerate(RANKS)
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else -1


def upward_imports(graph: ImportGraph) -> list[str]:
    problems = []
    for module in sorted(graph.modules):
        own = rank_of(module)
        for imported in sorted(graph.direct[module]):
            if imported in graph.runs(module):
                continue  # a package's own __init__ chain
            if rank_of(imported) > own:
                problems.append(f"{module} imports {imported}: {RANKS[rank_of(imported)]} is above {RANKS[own]}")
    return problems


def impure_paths(graph: ImportGraph, pure: Iterable[str]) -> list[str]:
    problems = []
    for module in pure:
        for reached, path in sorted(graph.closure(module).items()):
            bad = graph.external.get(reached, set()) & FORBIDDEN_IN_PURE
            if bad:
                problems.append(f"pure {module} reaches {', '.join(sorted(bad))} via {' -> '.join(path)}")
    return problems


def plyvel_importers(graph: ImportGraph) -> list[str]:
    return sorted(m for m in graph.modules if "plyvel" in graph.external[m])


# ---------------------------------------------------------------- the real tree

GRAPH = ImportGraph.from_tree(ROOT)


def test_every_layer_exists_and_has_files() -> None:
    for layer in RANKS:
        path = ROOT / layer.replace(".", "/") / "__init__.py"
        assert path.is_file(), f"{layer} has no __init__.py"


def test_every_module_has_a_rank() -> None:
    assert [m for m in sorted(GRAPH.modules) if rank_of(m) < 0] == []


def test_imports_point_downward() -> None:
    assert upward_imports(GRAPH) == []


@pytest.mark.parametrize("relative", PURE_MODULES)
def test_pure_modules_reach_no_io_by_any_path(relative: str) -> None:
    assert (ROOT / relative).is_file(), f"listed pure module {relative} is missing"
    assert impure_paths(GRAPH, [module_name(ROOT / relative, ROOT)]) == []


def test_plyvel_is_imported_in_exactly_one_module() -> None:
    assert plyvel_importers(GRAPH) == [PLYVEL_HOME]


# ---------------------------------------------------------------- the checker fails where it must


def made_up(sources: dict[str, str]) -> ImportGraph:
    return ImportGraph({name: (text, name in {"hlc", "mvcc", "txn", "txn.api", "txn.wire", "tools"})
                        for name, text in sources.items()})


def test_checker_catches_an_upward_import() -> None:
    graph = made_up({"txn": "", "txn.wire": "", "txn.api": "", "txn.wire.codec": "from txn.api import errors",
                     "txn.api.errors": ""})
    assert "txn.wire.codec imports txn.api.errors: txn.api is above txn.wire" in upward_imports(graph)


def test_checker_catches_trio_reached_through_a_package_init() -> None:
    # The bug this test was written for: a pure module imports `hlc`, whose
    # __init__ imports hlc.physical, which imports trio.
    graph = made_up({
        "hlc": "from hlc.physical import SystemClock\nfrom hlc.timestamp import Timestamp",
        "hlc.physical": "import trio",
        "hlc.timestamp": "",
        "txn": "", "txn.api": "", "txn.api.client": "from hlc import Timestamp",
    })
    [problem] = impure_paths(graph, ["txn.api.client"])
    assert "reaches trio via txn.api.client -> hlc -> hlc.physical" in problem


def test_checker_ignores_type_checking_imports_but_follows_function_imports() -> None:
    graph = made_up({
        "hlc": "", "hlc.timestamp": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trio\n",
        "hlc.clock": "def f():\n    import time\n",
    })
    assert impure_paths(graph, ["hlc.timestamp"]) == []
    assert len(impure_paths(graph, ["hlc.clock"])) == 1


def test_checker_catches_plyvel_outside_its_home_and_plyvel_nowhere() -> None:
    two = made_up({"mvcc": "", "mvcc.engine_leveldb": "import plyvel", "mvcc.store": "import plyvel"})
    assert plyvel_importers(two) == ["mvcc.engine_leveldb", "mvcc.store"] != [PLYVEL_HOME]
    none = made_up({"mvcc": "", "mvcc.engine_leveldb": "import json"})
    assert plyvel_importers(none) == [] != [PLYVEL_HOME]
