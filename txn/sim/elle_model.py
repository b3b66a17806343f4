"""A serial list-append database: clean histories for testing and benchmarking the checker.

Role: execute planned transactions one after another against a dict of lists,
in plan order, which is also commit-timestamp order, and log what a client
harness would have seen. Input: `TxnPlan`s (drawn by hypothesis in tests, by a
seeded stream in `txn/sim/elle_bench.py`); output: a history of `Op`.

Invariants, which make every history this produces strict serializable:
- Transaction i takes effect at instant `point_i = start + i * spacing`, with
  commit (or read) timestamp `Timestamp(point_i, 0)`; its invoke time is at or
  before that instant and its complete time at or after it, so real-time order
  never contradicts the serial order, yet transactions overlap.
- Appended values are unique per key, counted across all outcomes.
- `fail` transactions take no effect; `info` ones take effect iff planned to,
  and report neither reads nor a timestamp.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import attrs

from hlc.timestamp import Timestamp
from txn.sim.elle_records import FAIL, INFO, OK, Op

FATES = ("ok", "fail", "info-happened", "info-lost")


@attrs.frozen
class TxnPlan:
    mops: tuple = attrs.field(converter=tuple)  # ("append", key) or ("r", key)
    fate: str = "ok"  # one of FATES
    read_only: bool = False
    lead_ns: int = 0  # invoked this long before it takes effect
    lag_ns: int = 0  # completed this long after
    process: int = 0


def run_serial(plans: list[TxnPlan], start_ns: int = 1_000_000_000, spacing_ns: int = 1_000) -> list[Op]:
    state: dict = {}
    next_value: dict = {}
    history = []
    for position, plan in enumerate(plans):
        assert plan.fate in FATES, plan.fate
        assert not plan.read_only or all(mop[0] == "r" for mop in plan.mops), plan
        happened = plan.fate in ("ok", "info-happened")
        mops = []
        for kind, key in plan.mops:
            if kind == "append":
                value = next_value.get(key, 0) + 1
                next_value[key] = value
                if happened:
                    state.setdefault(key, []).append(value)
                mops.append(("append", key, value))
            else:
                mops.append(("r", key, tuple(state.get(key, ())) if plan.fate == "ok" else None))
        point_ns = start_ns + position * spacing_ns
        history.append(_logged(plan, mops, point_ns))
    return history


def _logged(plan: TxnPlan, mops: list, point_ns: int) -> Op:
    outcome = {"ok": OK, "fail": FAIL}.get(plan.fate, INFO)
    ts = Timestamp(point_ns, 0) if outcome == OK else None
    return Op(
        process=plan.process,
        invoke_ns=point_ns - plan.lead_ns,
        complete_ns=point_ns + plan.lag_ns,
        outcome=outcome,
        mops=mops,
        commit_ts=None if plan.read_only else ts,
        read_only=plan.read_only,
        read_ts=ts if plan.read_only else None,
    )
