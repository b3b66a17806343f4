"""The `chronodb` command as a user runs it: help, version, demo, bench hlc."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

from tools import cli

CHRONODB = [sys.executable, "-m", "tools.cli"]
ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHRONODB, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_help_lists_every_registered_subcommand() -> None:
    result = run("--help")
    assert result.returncode == 0
    parser = cli.build_parser()
    names = [action for action in parser._subparsers._group_actions[0].choices]  # type: ignore[union-attr]
    assert "demo" in names and "bench" in names
    for name in names:
        assert name in result.stdout


def test_commands_table_names_the_module_that_registers_each_command() -> None:
    import argparse
    import importlib

    registered = {}
    for module_name in cli.COMMAND_MODULES:
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module_name).register(subparsers)
        registered.update(dict.fromkeys(subparsers.choices, module_name))
    assert registered == cli.COMMANDS


def test_a_command_imports_only_its_own_module() -> None:
    """`chronodb get` must not pay for the simulation, networkx or matplotlib at start-up."""
    probe = ("import sys; from tools import cli; cli.build_parser(cli.command_of(['get', 'k'])); "
             "print(sorted(m for m in ('networkx', 'matplotlib', 'txn.sim.elle', 'tools.verify') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert run("get", "--help").returncode == 0


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("chronodb ")


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_demo_narrates_a_rejected_message() -> None:
    result = run("demo", "--clock")
    assert result.returncode == 0, result.stderr
    assert "n1 rejects it" in result.stdout
    assert "commit-wait" in result.stdout
    assert "n1 still rejects it" in result.stdout


def test_bench_hlc_prints_rates_and_ratios() -> None:
    result = run("bench", "hlc", "--seconds", "0.05")
    assert result.returncode == 0, result.stderr
    assert "benchmark: hlc" in result.stdout
    assert result.stdout.count(" ratio ") == 2


def test_bench_tls_refuses_a_payload_it_would_deadlock_on() -> None:
    result = run("bench", "tls", "--payload", str(16 << 20))
    assert result.returncode != 0 and "--payload is at most 65536 bytes" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "benchmark:" not in result.stdout


def test_bench_tls_prints_each_stream_and_the_ratio_to_trios() -> None:
    result = run("bench", "tls", "--seconds", "0.05", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for stream in ("bare TCP", "trio.SSLStream", "TlsStream"):
        row = next(line for line in lines if line.startswith(stream + " "))
        assert int(row.split()[-2].replace(",", "")) > 0  # round trips/s: the streams carried messages
    assert "TlsStream / trio.SSLStream: CPU per round trip x" in result.stdout


def test_bench_compaction_runs_the_log_stream_with_and_without_the_share_rule(tmp_path: pathlib.Path) -> None:
    """A 2 MB tablet, 8,000 Paxos entries: truncated every 1,001 past the 2,000th, checked every 800.
    Without the share rule the entry count alone compacts the log (at a check that finds truncated
    entries in table files: several chances, so LevelDB's background flush may lag on a busy
    machine); the run ends with the CPU ratio."""
    result = run("bench", "compaction", "--mb", "2", "--log-turns", "8000", "--tmp", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    alone = next(line for line in lines if line.startswith("log stream, log_min_share 0:"))
    assert re.search(r"; [1-9]\d* log compactions", alone), alone
    assert any(line.startswith("log stream, log_min_share 0.25:") for line in lines), result.stdout
    assert re.search(r"^CPU a turn, entry count alone / with the share rule: x\d+\.\d\d$", result.stdout, re.M)
    assert list(tmp_path.iterdir()) == []  # the directories are removed


@pytest.mark.parametrize("args", [
    *(["bench", name, "--seconds", bad] for name in ("hlc", "idle", "ir", "kv", "mvcc", "paxos", "probes", "rpc", "tls", "txn")
      for bad in ("0", "-1")),
    ["bench", "hlc", "--seconds", "nan"], ["bench", "tls", "--rounds", "0"], ["bench", "tls", "--payload", "x"],
    ["bench", "rpc", "--payload", "0"], ["bench", "mvcc", "--keys", "0"], ["bench", "txn", "--accounts", "-3"],
    ["bench", "kv", "--concurrency", "1,0"], ["bench", "txn", "--concurrency", "x"], ["bench", "kv", "--tablets", "300"],
    ["bench", "idle", "--tablets", "0"], ["bench", "kv", "--max-offset", "abc"], ["bench", "txn", "--max-offset=-5ms"],
    ["bench", "kv", "--client-processes", "0"], ["bench", "space", "--clients", "0"], ["bench", "ir", "--clients", "0"],
    ["bench", "paxos", "--tmp", "/nonexistent/dir"], ["bench", "compaction", "--tmp", "/nonexistent/dir"],
    ["bench", "compaction", "--log-turns", "-1"], ["bench", "compaction", "--log-turns", "many"],
])
def test_a_benchmark_refuses_settings_it_cannot_run_with_as_a_usage_error(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stdout + result.stderr  # a usage error before anything starts
    assert f"argument {args[2].split('=')[0]}:" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line: which argument and why
    assert "benchmark:" not in result.stdout  # nothing ran


@pytest.mark.parametrize("args", [["bench"], ["bench", "nonexistent"]])
def test_bench_without_a_known_benchmark_is_a_usage_error(args: list[str]) -> None:
    assert run(*args).returncode == 2
