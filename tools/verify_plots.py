"""Plots of a `chronodb verify` run, as Jepsen draws them: latency-raw and rate.

Role: from the history (`RegisterOp`s of the register workload, `TxnRecord`s
of list-append and bank: anything `Plotted`; times relative to the run's start) and
the fault intervals, write two PNGs with matplotlib's Agg backend (no
display needed):
- `latency-raw.png`: every operation's latency (log scale) at its invoke
  time, colour by kind (and read mode), marker by outcome (ok dot, failed
  cross, unknown triangle); a transaction attempt is one operation;
- `rate.png`: completed operations per second by kind and outcome.
Fault intervals are shaded and labelled on both.
"""

from __future__ import annotations

import pathlib
from collections import Counter
from typing import Protocol, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from txn.sim.elle_records import FAIL, INFO, OK  # noqa: E402

MARKERS = {OK: ("o", "ok"), FAIL: ("x", "failed"), INFO: ("^", "unknown")}
FAULT_COLOURS = {"kill": "#d62728", "pause": "#9467bd", "skew": "#ff7f0e", "partition": "#1f77b4"}
KIND_COLOURS = {"write": "#2ca02c", "read": "#1f77b4", "scan": "#8c564b", "txn": "#2ca02c", "read-only": "#1f77b4",
                "transfer": "#2ca02c", "balances": "#1f77b4", "open": "#7f7f7f"}
FaultSpan = tuple[str, str, float, float]  # kind, detail, start s, end s


class Plotted(Protocol):
    kind: str
    mode: str  # "" for writes and read-write transactions
    invoke_ns: int
    complete_ns: int
    outcome: str


def kind_label(op: Plotted) -> str:
    return f"{op.kind} {op.mode}".strip()


def _shade(axes, faults: Sequence[FaultSpan]) -> None:
    seen = set()
    for kind, detail, start_s, end_s in faults:
        label = f"fault: {kind}" if kind not in seen else None
        seen.add(kind)
        axes.axvspan(start_s, end_s, color=FAULT_COLOURS.get(kind, "grey"), alpha=0.15, label=label, linewidth=0)
        axes.text(start_s, 0.99, detail.split(" (")[0], fontsize=7, rotation=90, va="top", ha="right", alpha=0.8,
                  transform=axes.get_xaxis_transform())


def _mark_end(axes, workload_end_s: float | None) -> None:
    if workload_end_s is not None:
        axes.axvline(workload_end_s, color="black", linestyle="--", linewidth=0.8)
        axes.text(workload_end_s, 0.01, " workload ends; final checks", fontsize=7, va="bottom",
                  transform=axes.get_xaxis_transform())


def plot_latency(history: Sequence[Plotted], faults: Sequence[FaultSpan], path: pathlib.Path, title: str,
                 workload_end_s: float | None = None) -> None:
    figure, axes = plt.subplots(figsize=(13, 6), dpi=110)
    groups: dict[tuple[str, str], list[Plotted]] = {}
    for op in history:
        groups.setdefault((kind_label(op), op.outcome), []).append(op)
    colours = {label: plt.cm.tab10(i % 10) for i, label in enumerate(sorted({kind_label(op) for op in history}))}
    for (label, outcome), ops in sorted(groups.items()):
        marker, outcome_text = MARKERS[outcome]
        axes.scatter([op.invoke_ns / 1e9 for op in ops], [max(op.complete_ns - op.invoke_ns, 1) / 1e6 for op in ops],
                     s=9 if outcome == OK else 28, marker=marker, color=colours[label], alpha=0.6 if outcome == OK else 0.9,
                     label=f"{label} {outcome_text} ({len(ops)})", linewidths=1)
    axes.set_yscale("log")
    axes.set_xlabel("time since start (s)")
    axes.set_ylabel("latency (ms, log)")
    axes.set_title(f"{title}: latency of every operation")
    axes.grid(True, which="both", alpha=0.3)
    _shade(axes, faults)
    _mark_end(axes, workload_end_s)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=1.5)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_rate(history: Sequence[Plotted], faults: Sequence[FaultSpan], path: pathlib.Path, title: str,
              workload_end_s: float | None = None) -> None:
    figure, axes = plt.subplots(figsize=(13, 5), dpi=110)
    buckets: dict[tuple[str, str], Counter[int]] = {}
    last_s = 0
    for op in history:
        second = int(op.complete_ns // 1_000_000_000)
        last_s = max(last_s, second)
        buckets.setdefault((op.kind, op.outcome), Counter())[second] += 1
    seconds = list(range(last_s + 1))
    styles = {OK: "-", FAIL: ":", INFO: "--"}
    for (kind, outcome), counter in sorted(buckets.items()):
        axes.plot(seconds, [counter.get(s, 0) for s in seconds], styles[outcome], color=KIND_COLOURS.get(kind, "black"),
                  label=f"{kind} {MARKERS[outcome][1]}", linewidth=1.4, drawstyle="steps-post")
    axes.set_xlabel("time since start (s)")
    axes.set_ylabel("operations completed per second")
    axes.set_title(f"{title}: throughput")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    _shade(axes, faults)
    _mark_end(axes, workload_end_s)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
