"""`python -m txn.sim.elle --bench N`: how long checking a clean N-transaction history takes.

Role: the edge around the pure checker: draws plans from one seeded stream,
runs them through the serial model (`txn/sim/elle_model.py`), times
`check_list_append` with the process clock and prints one line. Not a test:
the figure is for humans comparing runs on one machine.
"""

from __future__ import annotations

import argparse
import random
import time

from txn.sim.elle import check_list_append
from txn.sim.elle_model import TxnPlan, run_serial

SPACING_NS = 1_000


def random_plans(count: int, seed: int) -> list[TxnPlan]:
    """Jepsen-like load: keys rotate so each list stays short; ~10 txns overlap."""
    rng = random.Random(f"{seed}/elle-bench")
    plans = []
    for position in range(count):
        read_only = rng.random() < 0.2
        window = position // 40
        keys = [f"k{window + rng.randrange(8)}" for _ in range(rng.randint(1, 4))]
        mops = [("r" if read_only or rng.random() < 0.5 else "append", key) for key in keys]
        fate = rng.choices(("ok", "fail", "info-happened", "info-lost"), weights=(90, 4, 3, 3))[0]
        lead, lag = rng.randrange(5 * SPACING_NS), rng.randrange(5 * SPACING_NS)
        plans.append(TxnPlan(mops, fate, read_only, lead, lag, position % 10))
    return plans


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m txn.sim.elle")
    parser.add_argument("--bench", type=int, metavar="N", required=True, help="transactions in the history")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    history = run_serial(random_plans(args.bench, args.seed), spacing_ns=SPACING_NS)
    started = time.perf_counter()
    verdict = check_list_append(history)
    elapsed = time.perf_counter() - started
    stats = " ".join(f"{name}={count}" for name, count in verdict.stats)
    print(f"checked {len(history)} ops in {elapsed:.2f}s: valid={verdict.valid} {stats}")
    for anomaly in verdict.anomalies[:5]:
        print(f"  {anomaly}")
    return 0 if verdict.valid else 1
