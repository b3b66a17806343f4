"""Short real runs of `chronodb verify` with the transactional workloads: a fresh local 3-node
cluster; list-append under the kill and skew nemeses, bank under skew. The verdict must be
valid, faults injected, every output written, the history must read back to the same
verdict, and anomalies injected into the real history must be caught."""

from __future__ import annotations

import json
import pathlib

import attrs
import pytest

from tools.localcluster import run_cli
from tools.verify_bank_check import check_bank_history
from tools.verify_txn import READ_ONLY, STRONG, TXN, TxnRecord, record_from_json, to_elle_op
from txn.sim.elle import check_list_append

pytestmark = pytest.mark.e2e


def verify(tmp_path: pathlib.Path, workload: str, nemesis: str, seconds: int, seed: str) -> tuple[dict, list[TxnRecord]]:
    out = tmp_path / "out"
    result = run_cli(["verify", "--fresh", "--workload", workload, "--nemesis", nemesis, "--seconds", str(seconds),
                      "--rate", "40", "--clients", "8", "--seed", seed, "--out", str(out)], timeout_s=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "verdict: valid" in result.stdout
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["valid"] and verdict["anomalies"] == [] and verdict["workload"] == workload
    faults = json.loads((out / "faults.json").read_text())
    assert all(f["end_ns"] is not None and f["end_ns"] > f["start_ns"] for f in faults)
    lines = (out / "history.jsonl").read_text().splitlines()
    assert len(lines) == verdict["ops"] == verdict["ok"] + verdict["failed"] + verdict["unknown"]
    for name in ("latency-raw.png", "rate.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["n1.log", "n2.log", "n3.log"]
    assert "final: tablet t4" in result.stdout
    return verdict, [record_from_json(json.loads(line)) for line in lines]


def test_list_append_run_under_kill_and_skew_is_valid(tmp_path: pathlib.Path) -> None:
    verdict, history = verify(tmp_path, "list-append", "kill,skew", 18, "test-la-1")
    assert verdict["faults"] >= 2 and set(verdict["faults_by_kind"]) <= {"kill", "skew"}
    committed = [r for r in history if r.kind == TXN and r.outcome == "ok"]
    # Loose on purpose: a loaded 2-core box may run few; the final phase alone commits 5.
    assert len(committed) >= 5 and verdict["stats"]["committed"] >= len(committed)
    assert any(r.kind == READ_ONLY and r.mode == STRONG and r.outcome == "ok" for r in history)
    assert len({r.txn_id for r in history if r.txn_id}) == len([r for r in history if r.txn_id])
    ops = [to_elle_op(r) for r in history]
    assert check_list_append(ops).valid
    assert_dropped_element_is_caught(history)
    assert_missed_append_is_caught(history)


def assert_dropped_element_is_caught(history: list[TxnRecord]) -> None:
    """The final strong snapshot, with the first element of a list dropped: no order of appends
    explains it next to the other reads, and it is not the state at its timestamp."""
    i, position = last_read(history, lambda r: r.kind == READ_ONLY and r.mode == STRONG, min_len=2)
    edited = drop(history, i, position, 0)
    names = set(check_list_append([to_elle_op(r) for r in edited]).names())
    assert {"incompatible-order", "snapshot-mismatch"} <= names, names


def assert_missed_append_is_caught(history: list[TxnRecord]) -> None:
    """The final read-write transaction reading every key, made to miss the last append of one key
    that was acknowledged before it began: a cycle with one anti-dependency (it must come after
    that append, by real time or by what it read of other keys, and reading without it puts it
    before)."""
    def after_ack(record: TxnRecord, position: int) -> bool:
        writers = {(m[1], m[2]): r for r in history for m in r.mops if m[0] == "append"}
        writer = writers.get((record.mops[position][1], record.mops[position][2][-1]))
        return writer is not None and writer.outcome == "ok" and writer.complete_ns < record.invoke_ns

    i, position = last_read(history, lambda r: r.kind == TXN and r.process == -1, min_len=1, also=after_ack)
    edited = drop(history, i, position, -1)
    names = set(check_list_append([to_elle_op(r) for r in edited]).names())
    assert names & {"G-single", "G-single-realtime"}, names


def last_read(history: list[TxnRecord], which, min_len: int, also=lambda record, position: True) -> tuple[int, int]:
    for i in range(len(history) - 1, -1, -1):
        record = history[i]
        if record.outcome != "ok" or not which(record):
            continue
        for position, mop in enumerate(record.mops):
            if mop[0] == "r" and len(mop[2]) >= min_len and also(record, position):
                return i, position
    pytest.fail("no read to edit in the history")


def drop(history: list[TxnRecord], i: int, position: int, element: int) -> list[TxnRecord]:
    mops = list(history[i].mops)
    kind, key, seen = mops[position]
    kept = list(seen)
    del kept[element]
    mops[position] = (kind, key, tuple(kept))
    return history[:i] + [attrs.evolve(history[i], mops=mops)] + history[i + 1:]


def test_bank_run_under_skew_is_valid(tmp_path: pathlib.Path) -> None:
    verdict, history = verify(tmp_path, "bank", "skew", 10, "test-bank-1")
    assert verdict["faults"] >= 1 and set(verdict["faults_by_kind"]) == {"skew"}
    accounts = tuple(mop[1] for mop in history[0].mops)
    assert history[0].kind == "open" and history[0].outcome == "ok" and len(accounts) == 8
    assert check_bank_history(history, accounts, 800).valid
    transfers = [r for r in history if r.kind == "transfer" and r.outcome == "ok" and r.writes]
    reads = [i for i, r in enumerate(history) if r.kind == "balances" and r.outcome == "ok"]
    assert len(transfers) >= 2 and len(reads) >= 2  # loose: the final phase alone runs 4 and 1 + read-backs
    # A snapshot made to see one account as it was before the transfer that wrote what it read:
    # that transfer's money vanishes or appears, and the read is not the state at its timestamp.
    by_id = {t.txn_id: t for t in transfers}
    i, account, writer = next((i, s[0], by_id[s[2]]) for i in reversed(reads) for s in history[i].seen if s[2] in by_id)
    before = next(s for s in writer.seen if s[0] == account)
    seen = [before if s[0] == account else s for s in history[i].seen]
    edited = history[:i] + [attrs.evolve(history[i], seen=seen, mops=[("r", a, b) for a, b, _, _ in seen])] + history[i + 1:]
    names = set(check_bank_history(edited, accounts, 800).names())
    assert {"bank-total-mismatch", "snapshot-mismatch"} <= names, names
