"""`bench kv --profile` refuses to start, with one line and before any cluster, where py-spy
could not work (tools/profiler.py); the e2e test (tests/e2e/test_bench_kv_profile.py) runs it."""

from __future__ import annotations

import pathlib

import pytest

from tools import cli, profiler


@pytest.mark.parametrize(("scope", "capable", "refused"), [
    (None, False, False), (0, False, False), (1, True, False), (1, False, True), (2, True, False),
    (2, False, True), (3, True, True),
])
def test_yama_refuses_a_sibling_without_cap_sys_ptrace(scope: int | None, capable: bool, refused: bool) -> None:
    assert (profiler.ptrace_refusal(scope, capable) is not None) is refused


def test_cap_sys_ptrace_is_bit_19_of_the_effective_set() -> None:
    assert profiler.has_cap_sys_ptrace("Name:\tx\nCapEff:\t000001ffffffffff\n")
    assert not profiler.has_cap_sys_ptrace("CapPrm:\t000001ffffffffff\nCapEff:\t0000000000000000\n")
    assert not profiler.has_cap_sys_ptrace("CapEff:\t000001fffff7ffff\n")


def refused_before_any_cluster(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                               tmp_path: pathlib.Path) -> str:
    """`chronodb bench kv --profile DIR`'s stderr, asserting it failed with one line and started nothing."""
    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")
    monkeypatch.setattr("tools.bench_kv.LocalCluster", no_cluster)
    code = cli.main(["bench", "kv", "--security", "insecure", "--profile", str(tmp_path / "profile")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.splitlines()) == 1, (code, out, err)
    assert not (tmp_path / "profile").exists()
    return err


def test_without_py_spy_bench_kv_profile_fails_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             tmp_path: pathlib.Path) -> None:
    monkeypatch.setattr(profiler, "locate_py_spy", lambda: None)
    err = refused_before_any_cluster(monkeypatch, capsys, tmp_path)
    assert err.startswith("chronodb: --profile needs py-spy") and "[profile]" in err


def test_a_py_spy_that_may_not_read_processes_fails_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: pathlib.Path) -> None:
    fake = tmp_path / "py-spy"
    fake.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "py-spy 0.0.0"; exit 0; fi\n'
                    'echo "Error: Operation not permitted (os error 1)" >&2\necho "Stack backtrace:" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setattr(profiler, "locate_py_spy", lambda: str(fake))
    monkeypatch.setattr(profiler, "ptrace_refusal", lambda scope, capable: None)  # as on a machine Yama allows
    err = refused_before_any_cluster(monkeypatch, capsys, tmp_path)
    assert err == ("chronodb: --profile: py-spy cannot read a Python process here (it needs ptrace permission): "
                   "Error: Operation not permitted (os error 1)\n")
