"""List-append history checker for `chronodb verify` (Elle, Kingsbury & Alvaro, VLDB 2020).

Role: given a history of transactions whose micro-operations append unique
integers to per-key lists and read whole lists, say whether some strict
serializable execution explains it, and if not, what went wrong. Input: a list
of `Op`; output: a `Verdict` of `Anomaly` records. Pure: no I/O, no clock, no
randomness; the same history always gives the same verdict.

How (Elle section 4): the longest read of a key fixes that key's version
order, because every read of a list must be a prefix of every longer read.
From the version orders come ww/wr/rw dependencies between transactions, and
from the harness's clock real-time edges; a cycle in that graph is an anomaly,
named after Adya's phenomena by the edges it needs (`txn/sim/elle_graph.py`).
Read-only transactions carrying a read timestamp are also replayed against the
committed read-write transactions ordered by commit timestamp
(`txn/sim/elle_snapshot.py`).

Invariants:
- A `fail` transaction never happened; an `info` one happened iff some ok read
  observed one of its appends. Only ok transactions' reads are evidence.
- A key whose reads disagree (`incompatible-order`) contributes no edges: its
  version order is unknown, and guessing one would invent cycles.
- A read at a past timestamp (`realtime=False`) is outside real-time order:
  no real-time edge, and it is no witness of a lost append.

HAZARD: real-time edges trust the harness's one reference clock. If invoke and
complete times come from different machines, skew within `max_offset` can
fake a `-realtime` anomaly; record both times on the client's clock.
"""

from __future__ import annotations

import sys
from collections import Counter

import attrs

from txn.sim import elle_graph, elle_snapshot
from txn.sim.elle_bank import check_bank
from txn.sim.elle_records import (
    DUPLICATE_ELEMENT,
    FAIL,
    G1A,
    G1B,
    GARBAGE_READ,
    INCOMPATIBLE_ORDER,
    INFO,
    LOST_APPEND,
    OK,
    Anomaly,
    Edge,
    Op,
    Verdict,
    ts_of,
)

__all__ = ["Anomaly", "Edge", "Op", "Verdict", "check", "check_bank", "check_list_append"]


@attrs.frozen
class Appends:
    """What the history says about every appended element."""

    writer: dict  # (key, value) -> index of the transaction that appended it
    last_append: dict  # (index, key) -> the transaction's final element for key
    reads: dict  # key -> [(index, tuple)], ok reads only, history order
    committed: tuple[bool, ...]  # per transaction: did it take effect?


def check(history: list[Op], workload: str = "list-append", **options: object) -> Verdict:
    """Check a history of the named workload ("list-append" or "bank")."""
    if workload == "list-append":
        return check_list_append(history)
    if workload == "bank":
        return check_bank(history, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown workload {workload!r}: expected 'list-append' or 'bank'")


def check_list_append(history: list[Op]) -> Verdict:
    """Every anomaly in a list-append history; valid iff there is none."""
    appends = index_appends(history)
    orders, anomalies = version_orders(appends)
    anomalies += element_anomalies(history, appends)
    anomalies += lost_appends(history, appends, orders)
    graph = elle_graph.build_graph(history, appends.committed, orders, appends.reads, appends.writer)
    anomalies += elle_graph.cycle_anomalies(graph, history)
    anomalies += elle_graph.timestamp_anomalies(graph, history)
    anomalies += elle_snapshot.snapshot_anomalies(history, appends.committed, appends.writer)
    stats = Counter(op.outcome for op in history)
    stats.update(
        ops=len(history),
        committed=sum(appends.committed),
        keys=len(orders),
        nodes=graph.number_of_nodes(),
        edges=graph.number_of_edges(),
    )
    return Verdict(valid=not anomalies, anomalies=anomalies, stats=stats)


def index_appends(history: list[Op]) -> Appends:
    writer: dict = {}
    last_append: dict = {}
    reads: dict = {}
    for index, op in enumerate(history):
        for mop in op.mops:
            if mop[0] == "append":
                writer.setdefault((mop[1], mop[2]), index)
                last_append[(index, mop[1])] = mop[2]
            elif mop[0] == "r" and op.outcome == OK:
                reads.setdefault(mop[1], []).append((index, mop[2] or ()))
    observed = {writer.get((key, value)) for key, key_reads in reads.items() for _, seen in key_reads for value in seen}
    committed = tuple(op.outcome == OK or (op.outcome == INFO and index in observed) for index, op in enumerate(history))
    return Appends(writer, last_append, reads, committed)


def version_orders(appends: Appends) -> tuple[dict, list[Anomaly]]:
    """Per key, the longest read with duplicates dropped (Elle section 4.2)."""
    orders: dict = {}
    anomalies: list[Anomaly] = []
    for key, key_reads in appends.reads.items():
        longest_index, longest = max(key_reads, key=lambda read: len(read[1]))
        bad = [(index, seen) for index, seen in key_reads if longest[: len(seen)] != seen]
        if bad:
            index, seen = bad[0]
            anomalies.append(
                Anomaly(
                    INCOMPATIBLE_ORDER,
                    (index, longest_index),
                    explanation=f"T{index} read {key}={list(seen)} and T{longest_index} read {key}={list(longest)}; "
                    f"neither is a prefix of the other, so no single order of appends to {key} explains both "
                    f"({len(bad)} read(s) of {key} disagree with the longest).",
                )
            )
            continue
        orders[key] = tuple(dict.fromkeys(longest))
    return orders, anomalies


def element_anomalies(history: list[Op], appends: Appends) -> list[Anomaly]:
    """G1a, G1b, garbage and duplicates: each read checked element by element."""
    anomalies: list[Anomaly] = []
    for key, key_reads in sorted(appends.reads.items(), key=lambda item: repr(item[0])):
        for reader, seen in key_reads:
            anomalies += _read_anomalies(history, appends, key, reader, seen)
    return anomalies


def _read_anomalies(history: list[Op], appends: Appends, key: object, reader: int, seen: tuple) -> list[Anomaly]:
    anomalies = []
    for value, count in Counter(seen).items():
        if count > 1:
            text = f"T{reader} read {key}={list(seen)}, which holds {value} {count} times; each element is appended once."
            anomalies.append(Anomaly(DUPLICATE_ELEMENT, (reader,), explanation=text))
    for value in dict.fromkeys(seen):
        writer = appends.writer.get((key, value))
        if writer is None:
            text = f"T{reader} read {key}={list(seen)}, but no transaction ever appended {value} to {key}."
            anomalies.append(Anomaly(GARBAGE_READ, (reader,), explanation=text))
        elif history[writer].outcome == FAIL:
            edge = Edge(writer, reader, "wr", key, value)
            text = (
                f"Aborted read (Adya G1a): T{reader} read {key}={list(seen)}, observing {value}, "
                f"which T{writer} appended but T{writer} failed, so it never happened."
            )
            anomalies.append(Anomaly(G1A, (writer, reader), (edge,), _stamps(history, writer, reader), text))
    if seen:
        anomalies += _intermediate_read(history, appends, key, reader, seen)
    return anomalies


def _intermediate_read(history: list[Op], appends: Appends, key: object, reader: int, seen: tuple) -> list[Anomaly]:
    """Adya G1b: the read ends at an element its writer later overwrote."""
    writer = appends.writer.get((key, seen[-1]))
    if writer is None or writer == reader or history[writer].outcome == FAIL:
        return []
    final = appends.last_append[(writer, key)]
    if final == seen[-1]:
        return []
    edge = Edge(writer, reader, "wr", key, seen[-1])
    text = (
        f"Intermediate read (Adya G1b): T{reader} read {key}={list(seen)}, ending at {seen[-1]}, "
        f"but T{writer} appended {final} to {key} after {seen[-1]}; T{reader} saw a state inside T{writer}."
    )
    return [Anomaly(G1B, (writer, reader), (edge,), _stamps(history, writer, reader), text)]


def lost_appends(history: list[Op], appends: Appends, orders: dict) -> list[Anomaly]:
    """An ok append that a read invoked after it completed does not contain."""
    anomalies = []
    for (key, value), writer in sorted(appends.writer.items(), key=lambda item: item[1]):
        op = history[writer]
        if op.outcome != OK or key not in orders or value in orders[key]:
            continue
        later = [reader for reader, _ in appends.reads[key]
                 if history[reader].realtime and history[reader].invoke_ns > op.complete_ns]
        if later:
            text = (
                f"Lost append: T{writer} appended {value} to {key} and was acknowledged at {op.complete_ns}ns, "
                f"yet T{later[0]}, invoked after that, read {key} without it, and no read ever saw it."
            )
            anomalies.append(Anomaly(LOST_APPEND, (writer, later[0]), (), _stamps(history, writer, later[0]), text))
    return anomalies


def _stamps(history: list[Op], *indexes: int) -> tuple:
    return tuple(ts_of(history[index]) for index in indexes)


if __name__ == "__main__":
    # The bench times a run, so it lives in an edge module; this module stays pure.
    from txn.sim import elle_bench

    sys.exit(elle_bench.main(sys.argv[1:]))
