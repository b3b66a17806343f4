"""`chronodb bench space`, short: a report every interval with every tablet, GC dropping
versions behind the retention on every tablet, and the verdict; and the verdict's rule."""

from __future__ import annotations

import re

from tests.e2e.harness import run_cli
from tools.bench_space import LEVEL_RATIO, levels_off

RETENTION_S = 5
ROW = re.compile(r"^\s*(?P<elapsed>\d+\.\d)\s+(?P<writes>[\d,]+)\s+\S+\s+(?P<tablet>t\d+)\s+(?P<mb>\d+\.\d+)\s+\S+"
                 r"\s+(?P<versions>[\d,?]+)\s+(?P<log>[\d,?]+)\s+(?P<lag>[\d.?-]+)\s+(?P<dropped>[\d,?]+)"
                 r"\s+(?P<compactions>[\d,?]+)\s+(?P<longest>[\d.?]+)$")


def number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_rule_compares_the_last_third_with_the_middle_third() -> None:
    MB = 1_000_000
    flat = {"t1": [1 * MB, 3 * MB, 2 * MB, 3 * MB, 2 * MB, 3 * MB]}  # warm-up, then a steady sawtooth
    assert levels_off(flat, [10, 20, 30, 40, 50, 60])[0] is True
    growing = {"t1": [1 * MB, 2 * MB, 3 * MB, 4 * MB, 5 * MB, 6 * MB], "t2": flat["t1"]}
    ok, lines = levels_off(growing, [10, 20, 30, 40, 50, 60])
    assert ok is False and lines[-1].startswith("verdict: GROWS") and f"{LEVEL_RATIO}x" in lines[-2]
    assert levels_off(flat, [10, 20])[0] is None


def test_a_short_soak_reports_and_collects_garbage_on_every_tablet() -> None:
    result = run_cli(["bench", "space", "--minutes", "0.5", "--gc-retention", f"{RETENTION_S}s", "--report-every", "5",
                      "--clients", "8"], timeout_s=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [match.groupdict() for line in result.stdout.splitlines() if (match := ROW.match(line))]
    reports = sorted({number(row["elapsed"]) for row in rows})
    assert len(reports) == 6 and reports[-1] >= 30.0, result.stdout  # a busy machine may wake a report late
    assert all(sum(1 for row in rows if number(row["elapsed"]) == at) == 3 for at in reports), result.stdout
    final = [row for row in rows if number(row["elapsed"]) == reports[-1]]
    assert number(final[0]["writes"]) > 0, result.stdout
    for row in final:
        assert number(row["dropped"]) > 0, f"GC dropped nothing on {row['tablet']}\n{result.stdout}"
        # The horizon trails safe time by the retention plus at most a pass interval and a busy machine.
        assert RETENTION_S <= number(row["lag"]) < RETENTION_S + 30, result.stdout
        assert number(row["versions"]) < number(row["writes"]), result.stdout
    assert re.search(r"^verdict: (levels off|GROWS) \(largest ratio x\d+\.\d\d\)$", result.stdout, re.M), result.stdout
    assert "LevelDB's info logs" in result.stdout
