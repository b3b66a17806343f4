"""The driver's `carry_out` hands a turn's chosen slots to the state machine at once when it can."""

from __future__ import annotations

from mvcc.engine import DictEngine
from paxos.driver import carry_out
from paxos.messages import Ballot, Entry
from paxos.storage import PaxosStorage
from paxos.types import Persist, Ready

BALLOT = Ballot(1, "n1")
READY = Ready(Persist(), (), (), (Entry(1, BALLOT, b"a"), Entry(2, BALLOT, b""), Entry(3, BALLOT, b"c")), None, False, 0)


class Core:
    def __init__(self) -> None:
        self.advanced = 0

    def advance(self, ready: Ready, now: int) -> None:
        self.advanced += 1


class OneByOne:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def apply(self, index: int, command: bytes) -> None:
        self.calls.append((index, command))


class AllAtOnce(OneByOne):
    def apply_entries(self, entries: list[tuple[int, bytes]]) -> None:
        self.calls.append(list(entries))


def run(state_machine: OneByOne) -> tuple[list[int], Core]:
    resolved: list[int] = []
    core = Core()
    carry_out(core, READY, 0, storage=PaxosStorage(DictEngine()), state_machine=state_machine,  # type: ignore[arg-type]
              send=lambda dst, msg: None, on_applied=lambda entry: resolved.append(entry.index))
    return resolved, core


def test_a_state_machine_with_apply_entries_gets_the_turn_in_one_call() -> None:
    machine = AllAtOnce()
    resolved, core = run(machine)
    assert machine.calls == [[(1, b"a"), (2, b""), (3, b"c")]]
    assert resolved == [1, 2, 3] and core.advanced == 1


def test_a_state_machine_without_it_gets_one_apply_per_slot() -> None:
    machine = OneByOne()
    resolved, _ = run(machine)
    assert machine.calls == [(1, b"a"), (2, b""), (3, b"c")] and resolved == [1, 2, 3]
