"""Nemeses of `chronodb verify`: faults injected into a running cluster on a schedule.

Role: while the workload runs, `Nemesis.run` injects one fault at a time
during the middle of the run and heals everything before the final period,
recording each fault as a `FaultEvent` (start and end on the harness's
monotonic clock) for the verdict and the plots.

Faults:
- `kill`: SIGKILL a node (one leading a tablet, if any), restart it after a
  pause. Local clusters only (we must own the processes).
- `pause`: SIGSTOP a node (leaders preferred), SIGCONT after a while. Local only.
- `skew`: through the admin `SkewRequest`: an offset or a bump within
  max_offset, a strobe, or an offset of 3 x max_offset, beyond the bound:
  there the node must fence itself (the event records whether it did; not
  when the node did not answer the request, e.g. just restarted after a
  kill: then no offset was applied).
- `partition`: through the admin `FaultRequest` (tools/fault.py): isolate a
  node both ways, make it deaf one way, or cut two nodes off from each other
  (a bridge through the third). Real drops in the nodes' transports.

Invariants: `heal_all` undoes every kind of fault (restart, SIGCONT, clear
skew, clear partitions) and is safe to call at any time; the schedule is
drawn from the run's seed.
"""

from __future__ import annotations

import random
import signal
from typing import Any, Callable

import attrs
import trio

from tools.fault import apply_partition, clear_all
from tools.localcluster import LocalCluster
from tools.status import ask_node, ask_nodes, gather, tablet_leaders
from tools.verify_workloads import now_ns
from txn import api
from txn.node.config import ClusterConfig

NEMESES = ("kill", "pause", "skew", "partition")
LOCAL_ONLY = ("kill", "pause")


@attrs.define(eq=False)
class FaultEvent:
    kind: str
    detail: str
    start_ns: int
    end_ns: int | None = None
    fenced: bool | None = None  # skew beyond max_offset: did the node fence itself?

    def to_json(self, start_ns: int) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "start_ns": self.start_ns - start_ns,
                "end_ns": None if self.end_ns is None else self.end_ns - start_ns, "fenced": self.fenced}


@attrs.define(eq=False)
class Nemesis:
    config: ClusterConfig
    cluster: LocalCluster | None
    kinds: tuple[str, ...]
    seed: str
    say: Callable[[str], None]
    events: list[FaultEvent] = attrs.field(factory=list)
    current: FaultEvent | None = None
    killed: set[str] = attrs.field(factory=set)
    paused: set[str] = attrs.field(factory=set)

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.config.nodes]

    async def run(self, faults_from_s: float, heal_at_s: float) -> None:
        """Faults one at a time in [faults_from_s, heal_at_s) (trio times), then heal all."""
        rng = random.Random(f"{self.seed}/nemesis")
        await trio.sleep_until(faults_from_s)
        try:
            while self.kinds:
                remaining_s = heal_at_s - trio.current_time()
                if remaining_s < 1.5:
                    break
                kind = rng.choice(self.kinds)
                hold_s = min(rng.uniform(2.0, 5.0), remaining_s - 0.5)
                await getattr(self, kind)(rng, hold_s)
                self.current = None
                await trio.sleep(min(rng.uniform(1.0, 2.5), max(0.0, heal_at_s - trio.current_time())))
        finally:
            with trio.CancelScope(shield=True):
                await self.heal_all()

    def begin(self, kind: str, detail: str) -> FaultEvent:
        event = FaultEvent(kind, detail, now_ns())
        self.events.append(event)
        self.current = event
        self.say(f"nemesis: {kind} {detail}")
        return event

    def end(self, event: FaultEvent) -> None:
        event.end_ns = now_ns()
        self.current = None

    async def pick_node(self, rng: random.Random) -> str:
        """A node leading some tablet, if any answers; else any node."""
        with trio.move_on_after(3):
            leaders = tablet_leaders(self.config, await gather(self.config))
            candidates = sorted({serving for serving, _ in leaders.values() if serving})
            if candidates:
                return rng.choice(candidates)
        return rng.choice(self.node_ids)

    # ---- the faults ----------------------------------------------------------

    async def kill(self, rng: random.Random, hold_s: float) -> None:
        assert self.cluster is not None
        node = await self.pick_node(rng)
        event = self.begin("kill", f"{node} (SIGKILL, restart after {hold_s:.1f}s)")
        self.cluster.kill(node, signal.SIGKILL)
        self.killed.add(node)
        await trio.sleep(hold_s)
        self.cluster.start(node)
        self.killed.discard(node)
        self.end(event)

    async def pause(self, rng: random.Random, hold_s: float) -> None:
        assert self.cluster is not None
        node = await self.pick_node(rng)
        event = self.begin("pause", f"{node} (SIGSTOP for {hold_s:.1f}s)")
        self.cluster.processes[node].send_signal(signal.SIGSTOP)
        self.paused.add(node)
        await trio.sleep(hold_s)
        self.cluster.processes[node].send_signal(signal.SIGCONT)
        self.paused.discard(node)
        self.end(event)

    async def skew(self, rng: random.Random, hold_s: float) -> None:
        node = rng.choice(self.node_ids)
        bound = self.config.max_offset_ns
        variant = rng.choice(("offset", "bump", "strobe", "beyond"))
        sign = rng.choice((1, -1))
        if variant == "offset":
            request = api.SkewRequest(api.SkewAction.SET, sign * bound // 2, None, None, None)
            detail = f"{node} offset {sign * bound // 2 / 1e6:+.1f}ms (within max_offset)"
        elif variant == "bump":
            request = api.SkewRequest(api.SkewAction.BUMP, sign * bound * 2 // 5, None, None, None)
            detail = f"{node} bump {sign * bound * 2 // 5 / 1e6:+.1f}ms (within max_offset)"
        elif variant == "strobe":
            request = api.SkewRequest(api.SkewAction.STROBE, sign * bound * 3 // 5, None, 200_000_000, int(hold_s * 1e9))
            detail = f"{node} strobe {sign * bound * 3 // 5 / 1e6:+.1f}ms every 200ms (within max_offset)"
        else:
            request = api.SkewRequest(api.SkewAction.SET, sign * bound * 3, None, None, None)
            detail = f"{node} offset {sign * bound * 3 / 1e6:+.1f}ms (3 x max_offset: must fence)"
        event = self.begin("skew", detail)
        reply = await ask_node(self.config, node, request)
        applied = isinstance(reply, api.NodeClockReply)
        if not applied:
            event.detail += f" [not applied: {getattr(reply, 'message', 'no answer')}]"
        if variant == "beyond" and applied:  # an offset never applied says nothing about fencing
            event.fenced = await self.watch_fenced(node, hold_s)
            self.say(f"nemesis: {node} {'fenced itself' if event.fenced else 'did NOT fence itself'}")
        else:
            await trio.sleep(hold_s)
        await ask_node(self.config, node, api.SkewRequest(api.SkewAction.CLEAR, None, None, None, None))
        self.end(event)

    async def watch_fenced(self, node: str, hold_s: float) -> bool:
        fenced = False
        with trio.move_on_after(hold_s):
            while True:
                reply = await ask_node(self.config, node, api.SkewRequest(api.SkewAction.SHOW, None, None, None, None))
                fenced = fenced or bool(getattr(reply, "fenced", False))
                await trio.sleep(0.2)
        return fenced

    async def partition(self, rng: random.Random, hold_s: float) -> None:
        node = rng.choice(self.node_ids)
        others = [n for n in self.node_ids if n != node]
        variant = rng.choice(("isolate", "one-way", "bridge"))
        if variant == "isolate":
            detail, peers, one_way = f"{node} isolated from {','.join(others)} (both ways)", others, False
        elif variant == "one-way":
            detail, peers, one_way = f"{node} hears nothing from {','.join(others)} (one way)", others, True
        else:
            peer = rng.choice(others)
            detail, peers, one_way = f"{node} and {peer} cut off from each other (bridge through the rest)", [peer], False
        event = self.begin("partition", detail)
        replies = await apply_partition(self.config, node, peers, one_way)
        missing = sorted(n for n, reply in replies.items() if not isinstance(reply, api.FaultReply))
        if missing:
            event.detail += f" [not applied on {','.join(missing)}]"
        await trio.sleep(hold_s)
        await clear_all(self.config)
        self.end(event)

    # ---- healing -------------------------------------------------------------

    async def heal_all(self) -> None:
        if self.cluster is not None:
            for node in sorted(self.paused):
                self.cluster.processes[node].send_signal(signal.SIGCONT)
            for node in sorted(self.killed):
                self.cluster.start(node)
        self.paused.clear()
        self.killed.clear()
        clear = api.SkewRequest(api.SkewAction.CLEAR, None, None, None, None)
        await ask_nodes(self.config, {n: clear for n in self.node_ids})
        await clear_all(self.config)
        if self.current is not None:
            self.end(self.current)
        self.say("nemesis: healed everything")


async def wait_serving(config: ClusterConfig, timeout_s: float) -> bool:
    """Until every tablet has a serving leader (True) or timeout_s passed (False)."""
    with trio.move_on_after(timeout_s):
        while True:
            leaders = tablet_leaders(config, await gather(config))
            if all(serving for serving, _ in leaders.values()):
                return True
            await trio.sleep(0.2)
    return False
