"""The whole stack's work per operation, in virtual time: what `chronodb bench ir` counts.

Role: one deterministic workload for instruction counting. Three real nodes
(3 tablets, one led by each) and the real client on the simulated network
(txn/sim: DictEngine stores, a 1 ms network, no faults, the virtual clock),
`clients` closed-loop workers doing `kind` operations (single-key writes,
reads 1 s in the past at the nearest replica, or `bench txn`'s transfers:
two-phase commits between one of 1,000 keys on t1 and one on t3, retried
when aborted) for `seconds` of virtual time after the leaders settle.
Prints `ops <n>` on stdout (transfers: committed ones).

Invariants: nothing depends on the real clock or on CPU speed (trio's
MockClock, the scheduler seeded, keys drawn from seeded streams), so two
runs of one tree do the same operations in the same order; the only
difference between two trees' instruction counts is their code. Sockets,
TLS and LevelDB are not in it: it counts the Python of nodes and client.

Run as `python -m tools.ir_workload --kind write --clients 16 --seconds 1`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import random

import attrs
import trio
import trio.testing

from tools.bench_ir import KINDS
from txn.client.transaction import Transaction
from txn.net.simnet import SimNetwork
from txn.node.config import TabletConfig
from txn.sim.cluster_sim import SimCluster, seed_trio_scheduler
from txn.sim.plan import SPLITS, SimPlan

NODES = ("n1", "n2", "n3")
SETTLE_S = 3.0  # virtual seconds for elections and the preferred leaders to serve
KEYS = tuple(bytes([first]) + b"%03d" % i for first in b"aeimquy" for i in range(20))  # spread over the tablets
ACCOUNTS = 1000  # a transfer's keys: one of as many on t1 (led by n1) and on t3 (n3), as `bench txn` draws
LEFT, RIGHT = b"a", b"m"  # their prefixes: below SPLITS[0] (t1) and above SPLITS[1] (t3)
PLAN_SEED = 3
PAST_NS = 1_000_000_000  # a past read 1 s back: beyond every wait of a replica (safe time, 2 x max_offset)


def plan(clients: int) -> SimPlan:
    """A fault-free 3-node, 3-tablet plan with equal clocks and a 1 ms network."""
    base = SimPlan.from_seed(PLAN_SEED)
    bounds = [b"", SPLITS[0], SPLITS[1], None]
    tablets = tuple(TabletConfig(f"t{i + 1}", bounds[i], bounds[i + 1], NODES, NODES[i]) for i in range(3))
    network = attrs.evolve(base.network, drop_rate=0.0, duplicate_rate=0.0,
                           latency_ns_min=1_000_000, latency_ns_max=1_000_000)
    return attrs.evolve(base, scenario="bounded", node_ids=NODES, tablets=tablets, faults=frozenset(),
                        network=network, offsets_ns={n: 0 for n in NODES}, drifts_ppm={n: 0 for n in NODES},
                        clients=clients, workload="kv", skewed_node=None, skew_ns=0)


async def _run(kind: str, clients: int, seconds: float) -> int:
    the_plan = plan(clients)
    net = SimNetwork(the_plan.seed, the_plan.network)
    cluster = SimCluster(the_plan, net)
    done = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        for node in NODES:
            cluster.start_node(node, nursery)
        await trio.sleep(SETTLE_S)
        # Seeded client streams: transaction ids and retry waits come from them.
        homes = [cluster.client(f"c{i}", NODES[i], rng=random.Random(f"{PLAN_SEED}/client/{i}"))
                 for i in range(len(NODES))]
        async with contextlib.AsyncExitStack() as stack:
            for home in homes:
                await stack.enter_async_context(home.open())
                assert home.client is not None
                await home.client.refresh_map()

            async def worker(number: int) -> None:
                nonlocal done
                client = homes[number % len(homes)].client
                assert client is not None
                stream = random.Random(number)
                end_s = trio.current_time() + seconds
                while trio.current_time() < end_s:
                    if kind == "transfer":
                        await client.run_transaction(functools.partial(transfer, *transfer_keys(stream)),
                                                     max_attempts=20)
                        done += 1
                        continue
                    key = stream.choice(KEYS)
                    if kind == "write":
                        await client.write([(key, b"x" * 32)])
                    else:
                        await client.get(key, stale_ns=PAST_NS)
                    done += 1

            async with trio.open_nursery() as workers:
                for number in range(clients):
                    workers.start_soon(worker, number)
        nursery.cancel_scope.cancel()
    return done


def transfer_keys(stream: random.Random) -> tuple[bytes, bytes]:
    """A transfer's two accounts, drawn from `stream`: one on t1, one on t3."""
    return LEFT + b"%04d" % stream.randrange(ACCOUNTS), RIGHT + b"%04d" % stream.randrange(ACCOUNTS)


async def transfer(left: bytes, right: bytes, tx: Transaction) -> None:
    """`bench txn`'s transfer: read both keys, move one unit (a two-phase commit: t1 and t3)."""
    a = int(await tx.get(left) or b"100")
    b = int(await tx.get(right) or b"100")
    tx.put(left, b"%d" % (a - 1))
    tx.put(right, b"%d" % (b + 1))


def run(kind: str, clients: int, seconds: float) -> int:
    """Operations done; the same for the same arguments, run after run."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}: {kind!r}")
    seed_trio_scheduler(PLAN_SEED)
    return trio.run(_run, kind, clients, seconds, clock=trio.testing.MockClock(autojump_threshold=0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.ir_workload", description=__doc__.split("\n\n")[1])
    parser.add_argument("--kind", choices=KINDS, default="write")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    print(f"ops {run(args.kind, args.clients, args.seconds)}", flush=True)


if __name__ == "__main__":
    main()
