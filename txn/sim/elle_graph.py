"""The transaction dependency graph of a list-append history, and its cycles.

Role: from per-key version orders (`txn/sim/elle.py`) build a networkx
DiGraph whose nodes are committed transactions (history indexes) and whose
edges carry `why = {kind: (key, value)}` for each dependency kind that joins
them; then name every cycle after Adya's phenomena (thesis section 4, Elle
section 3): G0 (ww only), G1c (ww and wr), G-single (exactly one rw), G2-item
(two or more rw), each with `-realtime` when the cycle needs a real-time edge.
Also checks that commit timestamps agree with ww, wr and real-time edges.

Invariants:
- No self-edges: a transaction reading its own appends depends on nothing.
- Real-time edges are a transitive reduction (Elle section 4.4): T gets an
  edge from each transaction completed before T was invoked and not already
  followed by another such one, so edges stay O(ops x concurrency). An `info`
  transaction never completes, so it is only ever a target. A read-only
  transaction, or one that wrote nothing, follows no one: the transactions
  before it keep their own edges to later ones, because its rt edges out
  carry no timestamp order (see below). A transaction marked `realtime=False` (a read at a past timestamp)
  gets no real-time edge at all.
- Timestamp order is required along ww and wr edges, and along rt edges out
  of read-write transactions (external consistency; into a read-only one: a
  strong snapshot covers every write acknowledged before it began). An rt
  edge out of a read-only transaction promises nothing about timestamps: a
  strong snapshot reads at `now + max_offset`, and a later transaction on a
  tablet it did not read may commit below that. Nor does one out of a
  transaction that wrote nothing (`orders_later_commits`): it commits as a
  read at its leader's now, without commit-wait. (On a tablet it did read,
  the read raised the leader's floor, so a later commit below the snapshot
  would show as `snapshot-mismatch` or a cycle.)
- Cycle search looks only inside strongly connected components, so a clean
  history costs one Tarjan pass; each component is searched from the most
  specific class (G0) to the least, one witness per class.

Pure: no I/O, no clock, no randomness; iteration follows insertion order,
which follows history order.
"""

from __future__ import annotations

import networkx as nx

from txn.sim.elle_records import (
    G0,
    G1C,
    G2_ITEM,
    G_SINGLE,
    OK,
    REALTIME,
    RT,
    RW,
    TIMESTAMP_ORDER,
    WR,
    WW,
    Anomaly,
    Edge,
    Op,
    orders_later_commits,
    ts_of,
)

PRECEDENCE = (WW, WR, RW, RT)  # a cycle edge is named by its most specific kind
# Each search: ("cycle" | "single", kinds allowed on the non-rw path).
SEARCHES = (
    ("cycle", frozenset({WW})),
    ("cycle", frozenset({WW, WR})),
    ("single", frozenset({WW, WR})),
    ("cycle", frozenset({WW, WR, RW})),
    ("cycle", frozenset({WW, RT})),
    ("cycle", frozenset({WW, WR, RT})),
    ("single", frozenset({WW, WR, RT})),
    ("cycle", frozenset({WW, WR, RW, RT})),
)
SINGLE_TRIES_MAX = 64  # rw edges tried per component before giving up on G-single
EXPLAIN = {
    G0: "a write cycle: the transactions' appends interleave on these keys, so no order of whole transactions "
    "produces the version orders that reads observed",
    G1C: "circular information flow: each transaction's effects were visible to, or overwritten by, the next, "
    "round to the first, without any anti-dependency",
    G_SINGLE: "read skew: exactly one anti-dependency closes the cycle, so one transaction read a state that "
    "missed an append which, by the other dependencies, must already have happened",
    G2_ITEM: "an anti-dependency cycle (write skew and friends): two or more transactions each read a state "
    "missing another's append, which no serial order allows",
}


def build_graph(history: list[Op], committed: tuple, orders: dict, reads: dict, writer: dict) -> nx.DiGraph:
    """ww, wr and rw edges from the version orders, plus real-time edges."""
    edges = _Edges(frozenset(index for index, happened in enumerate(committed) if happened))
    for key, order in orders.items():
        writers = [writer.get((key, value)) for value in order]
        for position in range(1, len(order)):
            edges.add(writers[position - 1], writers[position], WW, key, order[position])
        for reader, seen in reads[key]:
            distinct = len(dict.fromkeys(seen))
            if seen:
                edges.add(writer.get((key, seen[-1])), reader, WR, key, seen[-1])
            if distinct < len(order):
                edges.add(reader, writers[distinct], RW, key, order[distinct])
    _add_realtime(edges, history, committed)
    graph = nx.DiGraph()
    graph.add_nodes_from(sorted(edges.nodes))
    graph.add_edges_from((src, dst, {"why": why}) for (src, dst), why in edges.why.items())
    return graph


class _Edges:
    """Edges gathered in a dict first: networkx's add_edge costs ~15us a call."""

    def __init__(self, nodes: frozenset) -> None:
        self.nodes = nodes
        self.why: dict[tuple[int, int], dict] = {}

    def add(self, src: int | None, dst: int | None, kind: str, key: object, value: object) -> None:
        if src != dst and src in self.nodes and dst in self.nodes:
            self.why.setdefault((src, dst), {}).setdefault(kind, (key, value))


def _add_realtime(edges: _Edges, history: list[Op], committed: tuple) -> None:
    """T1 -rt-> T2 when T1 completed (ok) before T2 was invoked, reduced."""
    events = []
    for index, happened in enumerate(committed):
        if happened and history[index].realtime:
            events.append((history[index].invoke_ns, 0, index))
            if history[index].outcome == OK:
                events.append((history[index].complete_ns, 1, index))
    events.sort()  # at equal times invokes sort first: touching is not "before"
    frontier: dict[int, None] = {}  # completed and not yet followed; an ordered set
    seen_at_invoke: dict[int, tuple[int, ...]] = {}
    for _, is_complete, index in events:
        if is_complete:
            if orders_later_commits(history[index]):
                for earlier in seen_at_invoke[index]:
                    frontier.pop(earlier, None)
            frontier[index] = None
        else:
            seen_at_invoke[index] = tuple(frontier)
            for earlier in seen_at_invoke[index]:
                edges.add(earlier, index, RT, None, None)


def cycle_anomalies(graph: nx.DiGraph, history: list[Op]) -> list[Anomaly]:
    """One witness cycle per class per strongly connected component."""
    anomalies = []
    components = sorted(sorted(component) for component in nx.strongly_connected_components(graph) if len(component) > 1)
    for component in components:
        found: dict[str, list[Edge]] = {}
        subgraph = graph.subgraph(component)
        for search, kinds in SEARCHES:
            cycle = _find_cycle(subgraph, kinds) if search == "cycle" else _find_single(subgraph, kinds)
            if cycle is not None:
                found.setdefault(classify(cycle), cycle)
        anomalies += [_cycle_anomaly(name, cycle, history) for name, cycle in found.items()]
    return anomalies


def _restrict(graph: nx.DiGraph, kinds: frozenset) -> nx.DiGraph:
    restricted = nx.DiGraph()
    restricted.add_nodes_from(graph)
    restricted.add_edges_from((src, dst) for src, dst, why in graph.edges(data="why") if kinds & why.keys())
    return restricted


def _find_cycle(graph: nx.DiGraph, kinds: frozenset) -> list[Edge] | None:
    try:
        pairs = nx.find_cycle(_restrict(graph, kinds))
    except nx.NetworkXNoCycle:
        return None
    return [_edge(graph, src, dst, kinds) for src, dst in pairs]


def _find_single(graph: nx.DiGraph, kinds: frozenset) -> list[Edge] | None:
    """An rw edge a -> b closed by a path b ~> a without rw (Elle section 4.3)."""
    restricted = _restrict(graph, kinds)
    rw_edges = [(src, dst) for src, dst, why in graph.edges(data="why") if RW in why]
    for src, dst in rw_edges[:SINGLE_TRIES_MAX]:
        try:
            path = nx.shortest_path(restricted, dst, src)
        except nx.NetworkXNoPath:
            continue
        closing = [_edge(graph, a, b, kinds) for a, b in zip(path, path[1:])]
        return [_edge(graph, src, dst, kinds | {RW})] + closing
    return None


def _edge(graph: nx.DiGraph, src: int, dst: int, kinds: frozenset) -> Edge:
    why = graph[src][dst]["why"]
    kind = next(kind for kind in PRECEDENCE if kind in kinds and kind in why)
    key, value = why[kind]
    return Edge(src, dst, kind, key, value)


def classify(cycle: list[Edge]) -> str:
    """Adya's name for a cycle, from the kinds of its edges."""
    kinds = [edge.kind for edge in cycle]
    anti = kinds.count(RW)
    if anti == 0:
        name = G1C if WR in kinds else G0
    else:
        name = G_SINGLE if anti == 1 else G2_ITEM
    return name + REALTIME if RT in kinds else name


def _cycle_anomaly(name: str, cycle: list[Edge], history: list[Op]) -> Anomaly:
    txns = tuple(edge.src for edge in cycle)
    stamps = tuple(ts_of(history[index]) for index in txns)
    base = name.removesuffix(REALTIME)
    text = f"{name}: {'; '.join(str(edge) for edge in cycle)}; back to T{txns[0]}. This is {EXPLAIN[base]}."
    if name.endswith(REALTIME):
        text += (
            " The cycle needs real-time edges (rt: one transaction completed before the other was invoked), "
            "so a serializable system could produce it but a strict serializable one cannot."
        )
    return Anomaly(name, txns, cycle, stamps, text)


def timestamp_anomalies(graph: nx.DiGraph, history: list[Op]) -> list[Anomaly]:
    """ww, wr and rt edges must go up in timestamp order (a read may sit at its writer's ts);
    rt edges out of read-only transactions excepted (see the module docstring)."""
    anomalies = []
    for src, dst, why in graph.edges(data="why"):
        before, after = ts_of(history[src]), ts_of(history[dst])
        if before is None or after is None:
            continue
        in_order = before <= after if history[dst].read_only else before < after
        ordered = (WW, WR, RT) if orders_later_commits(history[src]) else (WW, WR)
        kinds = [kind for kind in ordered if kind in why]
        if in_order or not kinds:
            continue
        edges = [Edge(src, dst, kind, *why[kind]) for kind in kinds]
        text = (
            f"Timestamp order: {', '.join(str(edge) for edge in edges)} says T{src} precedes T{dst}, "
            f"but ts(T{src})={before} is not below ts(T{dst})={after}; the database's timestamp order "
            "disagrees with what clients observed."
        )
        anomalies.append(Anomaly(TIMESTAMP_ORDER, (src, dst), edges, (before, after), text))
    return anomalies
