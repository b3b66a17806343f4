"""Hostile probes against a running local cluster (issue 16): the attacker's side.

Role: the code that attacks, reused by `chronodb bench probes`
(tools/bench_probes.py, which measures) and tests/e2e/test_probes.py (which
asserts). Inputs: a `LocalCluster` whose node processes this process started
(the follower probe SIGSTOPs one), a duration and a `ProbeScale`. Output: one
`ProbeResult` per probe: what it did (counts, bytes) and the probe-specific
outcomes that must hold if the node's defence works (`checks`).

Attackers are of two kinds: a local process that can reach a node's port
(no certificate: raw TCP), and a client holding a valid certificate (the
admin client certificate `LocalCluster` makes under DIR/certs/, or a node's,
for the peer variant of the garbage probe). Also here: the "normal client"
(`write_steadily`: sequential single-key puts of ~100-byte values through
the real client library), the RSS sampler (RssAnon and RssFile from /proc/PID/status) and
the after-checks (every node alive, every tablet accepts a write).

Invariants: every network wait has a deadline (`fail_after`/`move_on_after`);
every socket a probe opens is closed when the probe returns, however it
ends; a SIGSTOPped node is always SIGCONTed before the probe returns.
"""

from __future__ import annotations

import math
import os
import pathlib
import random
import signal
import sys
from contextlib import AsyncExitStack
from typing import Any, Awaitable, Callable, Sequence

import attrs
import trio

from hlc import HybridClock
from hlc.physical import SystemClock
from tools.bench_idle import rss_kb
from tools.localcluster import ROOT, LocalCluster, cli_env
from tools.status import gather, tablet_leaders
from txn import api, wire
from txn.api.limits import MAX_SCAN_REPLY_BYTES
from txn.client import ClientError, Refused, TooLarge, open_client
from txn.client.client import Client
from txn.net.client_connection import open_client_connection
from txn.net.tls import certs_dir, load_client_tls, load_node_tls
from txn.node.config import node_dir
from txn.wire import Envelope, Handshake, Kind

MIB = 1 << 20
NETWORK_DEADLINE_S = 10.0  # any single connect, handshake, send or read of a probe
NORMAL_VALUE_BYTES = 100
PEER_PORT_DEADLINE_S = 8.0  # the node must close a garbage connection within this (handshake deadline 5 s)


@attrs.frozen
class ProbeScale:
    """How hard each probe pushes; the bench uses the defaults, tests shrink them."""

    flood_extra_connections: int = 256  # beyond max_connections (1024)
    idle_connections: int = 256  # TLS + handshake, then silence
    half_frame_connections: int = 24
    half_frame_announced_bytes: int = 16 * MIB - 64  # just under the 16 MiB frame limit
    half_frame_sent_bytes: int = 8 * MIB  # of it, per connection
    unread_scan_requests: int = 100
    scan_keys: int = 16  # rows of scan_value_bytes under SCAN_PREFIX, for both scan probes
    scan_value_bytes: int = 1 * MIB
    oversize_bytes: int = 64 * MIB
    catchup_values: int = 20
    catchup_value_bytes: int = 4 * MIB


@attrs.frozen
class ProbeResult:
    name: str
    did: str  # one line: what the probe did, with counts and bytes
    checks: tuple[tuple[str, bool], ...] = attrs.field(converter=tuple)  # (what must hold, whether it did)

    @property
    def failed_checks(self) -> list[str]:
        return [what for what, held in self.checks if not held]


@attrs.define(eq=False)
class WriteLog:
    """The normal client's record: latencies (s) of completed writes and errors, since `reset`."""

    latencies_s: list[float] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)

    def reset(self) -> None:
        self.latencies_s, self.errors = [], []


@attrs.define(eq=False)
class RssSampler:
    """Every node's resident memory, sampled every `interval_s` until cancelled: first and peak per
    node, of its own (anonymous) memory and, apart, of the files it maps.

    The bound is on anonymous memory (RssAnon: heap, Python objects, buffers). VmRSS adds RssFile,
    and there LevelDB's read-only mmaps of its table files (up to 1,000 files) count every page
    read: clean page cache that the kernel takes back under pressure, and that grows with the data
    read, not with anything the node holds (in the follower-catch-up probe, about half of VmRSS)."""

    pids: dict[str, int]
    interval_s: float = 0.25
    first_kb: dict[str, int] = attrs.field(factory=dict)
    peak_kb: dict[str, int] = attrs.field(factory=dict)
    file_first_kb: dict[str, int] = attrs.field(factory=dict)
    file_peak_kb: dict[str, int] = attrs.field(factory=dict)
    samples: int = 0

    def sample(self) -> None:
        for node_id, pid in self.pids.items():
            rss = rss_kb(pid)
            if rss is None:
                continue
            anon, mapped = rss
            self.first_kb.setdefault(node_id, anon)
            self.peak_kb[node_id] = max(self.peak_kb.get(node_id, 0), anon)
            self.file_first_kb.setdefault(node_id, mapped)
            self.file_peak_kb[node_id] = max(self.file_peak_kb.get(node_id, 0), mapped)
        self.samples += 1

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(self.interval_s)

    def growth_mb(self, node_id: str) -> float:
        return (self.peak_kb.get(node_id, 0) - self.first_kb.get(node_id, 0)) / 1024


def node_pids(cluster: LocalCluster) -> dict[str, int]:
    return {node_id: process.pid for node_id, process in cluster.processes.items()}


def dead_nodes(cluster: LocalCluster) -> list[str]:
    return [node_id for node_id, process in sorted(cluster.processes.items()) if process.poll() is not None]


# ------------------------------------------------------------------ normal client and after-checks


def key_in(tablet: Any, name: bytes) -> bytes:
    """A key of `tablet` starting with its start key (b"0" for the first tablet, whose start is empty)."""
    key = (tablet.start or b"0") + name
    assert tablet.start <= key and (tablet.end is None or key < tablet.end), (key, tablet)
    return key


def tablet_keys(cluster: LocalCluster, name: bytes) -> list[bytes]:
    """One key per tablet, each starting with `name` after the tablet's start."""
    return [key_in(tablet, name) for tablet in cluster.config.tablets]


def cluster_client(cluster: LocalCluster, timeout_s: float = 10.0) -> Any:
    return open_client([n.address for n in cluster.config.nodes], cluster_id=cluster.config.cluster_id,
                       max_offset_ns=cluster.config.max_offset_ns, timeout_s=timeout_s, tls=cluster.tls)


async def write_steadily(client: Client, keys: Sequence[bytes], log: WriteLog) -> None:
    """The normal client: sequential puts of ~100-byte values over `keys` (one per tablet) until cancelled."""
    value = b"v" * NORMAL_VALUE_BYTES
    for i in range(1 << 62):
        start = trio.current_time()
        try:
            await client.put(keys[i % len(keys)] + b"%d" % (i % 100), value)
        except ClientError as error:
            log.errors.append(f"{type(error).__name__}: {error}")
            await trio.sleep(0.05)  # a failing cluster is not spun against
            continue
        log.latencies_s.append(trio.current_time() - start)


async def writes_accepted(cluster: LocalCluster, timeout_s: float = 30.0) -> str | None:
    """None if every tablet takes a write within timeout_s (retrying), else what failed."""
    problem = "deadline passed"
    with trio.move_on_after(timeout_s):
        async with cluster_client(cluster, timeout_s=min(10.0, timeout_s)) as client:
            for key in tablet_keys(cluster, b"probe-after"):
                while True:
                    try:
                        await client.put(key, b"after")
                        break
                    except ClientError as error:
                        problem = f"put {key!r}: {type(error).__name__}: {error}"
                        await trio.sleep(0.2)
            return None
    return problem


async def leaders(cluster: LocalCluster) -> dict[str, str | None]:
    statuses = await gather(cluster.config, cluster.tls)
    return {tablet: serving for tablet, (serving, _) in tablet_leaders(cluster.config, statuses).items()}


async def wait_leaders(cluster: LocalCluster, timeout_s: float = 60.0) -> dict[str, str]:
    with trio.fail_after(timeout_s):
        while True:
            found = await leaders(cluster)
            if all(found.values()):
                return found  # type: ignore[return-value]
            await trio.sleep(0.2)


def log_text(cluster: LocalCluster, node_id: str) -> str:
    return (node_dir(cluster.data_dir, node_id) / "node.log").read_text(errors="replace")


# ------------------------------------------------------------------ raw attacker connections


def new_clock(cluster: LocalCluster) -> HybridClock:
    return HybridClock(SystemClock(), cluster.config.max_offset_ns)


def frame(message: Any) -> bytes:
    return wire.encode_frame(wire.encode(message))


def request_frame(clock: HybridClock, request_id: int, body: Any) -> bytes:
    return frame(Envelope(clock.now(), Kind.REQUEST, request_id, body))


async def tls_stream(cluster: LocalCluster, node_id: str, *, as_node: str | None = None) -> trio.SSLStream:
    """TCP then TLS to `node_id` with the admin client certificate (or node `as_node`'s), within the deadline."""
    certs = certs_dir(cluster.data_dir)
    context = load_node_tls(certs, as_node).dialer if as_node else load_client_tls(certs).context
    with trio.fail_after(NETWORK_DEADLINE_S):
        stream = trio.SSLStream(await trio.open_tcp_stream(*cluster.address(node_id)), context)
        await stream.do_handshake()
    return stream


async def client_stream(cluster: LocalCluster, node_id: str) -> trio.SSLStream:
    """A TLS stream past the chronodb handshake as "client" (its reply read), ready for frames."""
    stream = await tls_stream(cluster, node_id)
    with trio.fail_after(NETWORK_DEADLINE_S):
        await stream.send_all(frame(Handshake(wire.PROTOCOL_VERSION, cluster.config.cluster_id, "client")))
        decoder = wire.FrameDecoder()
        while not decoder.feed(await stream.receive_some(1 << 16)):
            pass
    return stream


async def closed_by_peer(stream: trio.abc.Stream, deadline_s: float) -> tuple[bool, int]:
    """Read and discard until the other side closes: (closed within deadline_s, bytes read)."""
    received = 0
    with trio.move_on_after(deadline_s):
        try:
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    return True, received
                received += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return True, received
    return False, received


async def close_quietly(stream: trio.abc.AsyncResource) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


def target_node(cluster: LocalCluster) -> str:
    return cluster.node_ids[0]


# ------------------------------------------------------------------ the probes


async def probe_flood(cluster: LocalCluster, seconds: float, scale: ProbeScale) -> ProbeResult:
    """More raw TCP connections than max_connections that never start TLS: all opened, then held (and
    re-opened as the node closes them) for `seconds`; meanwhile a legitimate new connection is tried."""
    node = target_node(cluster)
    wanted = 1024 + scale.flood_extra_connections
    opened = failed = refused_fast = closed_late = 0
    first_opened = trio.Event()
    first_done = 0
    new_while_full: list[str] = []

    async def hold_one() -> None:
        nonlocal opened, failed, refused_fast, closed_late, first_done
        first = True
        while True:
            try:
                with trio.fail_after(NETWORK_DEADLINE_S):
                    stream = await trio.open_tcp_stream(*cluster.address(node))
                opened += 1
            except (OSError, trio.TooSlowError):
                stream = None
                failed += 1
            if first:
                first, first_done = False, first_done + 1
                if first_done == wanted:
                    first_opened.set()
            if stream is None:
                await trio.sleep(0.5)
                continue
            began = trio.current_time()
            try:
                closed, _ = await closed_by_peer(stream, math.inf)
            finally:
                await close_quietly(stream)
            if closed and trio.current_time() - began < 1.0:
                refused_fast += 1  # evicted by newer connections (or refused at accept: max_connections)
                await trio.sleep(0.5)  # a refused slot is re-tried, not spun on
            elif closed:
                closed_late += 1  # evicted later, or the handshake deadline

    async def try_new_client() -> None:
        # In a process of its own, as a real client is: in this one it would share the event loop
        # with the flood's thousand tasks, and its TLS messages would wait behind them.
        with trio.move_on_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "tools.probes", "new-client", str(cluster.data_dir), node],
                capture_stdout=True, capture_stderr=True, check=False, env=cli_env(), cwd=ROOT)
            answer = done.stdout.decode(errors="replace").strip()
            new_while_full.append(answer or f"exit {done.returncode}: {done.stderr.decode(errors='replace')[-300:]}")

    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(wanted):
            nursery.start_soon(hold_one)
        with trio.move_on_after(60):
            await first_opened.wait()
        opened_in_s = trio.current_time() - began
        await trio.sleep(min(1.0, seconds / 2))
        await try_new_client()
        await trio.sleep_until(began + opened_in_s + seconds)
        nursery.cancel_scope.cancel()
    log_says = "max_handshaking" in log_text(cluster, node)
    return ProbeResult(
        "flood",
        f"{wanted} raw TCP connections to {node} without a TLS ClientHello, opened in {opened_in_s:.1f}s and held "
        f"(each re-opened when closed) {seconds:g}s: {opened} opened in all, {refused_fast} closed within 1 s, "
        f"{closed_late} closed later, {failed} connects failed; a new TLS client meanwhile: "
        f"{new_while_full[0] if new_while_full else '-'}",
        [("idle connections closed to make room (max_handshaking)", refused_fast + closed_late > 0 and log_says),
         ("a new TLS client was served while the flood ran", new_while_full == ["served"])],
    )


async def probe_idle(cluster: LocalCluster, seconds: float, scale: ProbeScale) -> ProbeResult:
    """Client connections that finish TLS and the handshake, then send nothing for `seconds`."""
    node = target_node(cluster)
    streams: list[trio.SSLStream] = []
    failed = 0
    served = False
    began = trio.current_time()
    slots = trio.Semaphore(16)  # handshakes in parallel: one at a time takes ~80 ms each on a loaded box

    async def open_one() -> None:
        nonlocal failed
        async with slots:
            try:
                streams.append(await client_stream(cluster, node))
            except (OSError, trio.BrokenResourceError, trio.TooSlowError):
                failed += 1

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(scale.idle_connections):
                nursery.start_soon(open_one)
        opened_in_s = trio.current_time() - began
        await trio.sleep(max(0.0, seconds - opened_in_s))
        async with open_client_connection(*cluster.address(node), cluster_id=cluster.config.cluster_id,
                                          clock=new_clock(cluster), timeout_s=5, tls=cluster.tls) as conn:
            served = isinstance(await conn.call(api.StatusRequest(), timeout_s=5), api.NodeStatusReply)
    finally:
        for stream in streams:
            await close_quietly(stream)
    return ProbeResult(
        "idle",
        f"{len(streams)} TLS client connections to {node} handshaken then idle (opened in {opened_in_s:.1f}s, "
        f"{failed} failed), held {max(seconds, opened_in_s):.1f}s",
        [("every idle connection was accepted", failed == 0), ("a new client is served meanwhile", served)],
    )


async def probe_half_frames(cluster: LocalCluster, seconds: float, scale: ProbeScale) -> ProbeResult:
    """Client connections (valid certificate) each announcing a ~16 MiB frame and sending only part of it."""
    node = target_node(cluster)
    header = scale.half_frame_announced_bytes.to_bytes(wire.FRAME_HEADER_BYTES, "big")
    chunk = os.urandom(64 << 10)
    sent = cut_off = refused = 0
    stop_at = trio.current_time() + seconds

    async def one() -> None:
        nonlocal sent, cut_off, refused
        try:
            stream = await client_stream(cluster, node)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):
            refused += 1
            return
        try:
            with trio.move_on_at(stop_at):
                try:
                    await stream.send_all(header)
                    for _ in range(scale.half_frame_sent_bytes // len(chunk)):
                        await stream.send_all(chunk)
                        sent += len(chunk)
                    closed, _ = await closed_by_peer(stream, math.inf)
                    cut_off += closed
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    cut_off += 1
        finally:
            await close_quietly(stream)

    async with trio.open_nursery() as nursery:
        for _ in range(scale.half_frame_connections):
            nursery.start_soon(one)
    return ProbeResult(
        "half-frames",
        f"{scale.half_frame_connections} TLS client connections to {node} each announced a "
        f"{scale.half_frame_announced_bytes / MIB:.1f} MiB frame and sent up to "
        f"{scale.half_frame_sent_bytes / MIB:.1f} MiB of it: {sent / MIB:.0f} MiB sent in all, "
        f"{cut_off} connections cut off by the node, {refused} not accepted, held {seconds:g}s",
        [],
    )


SCAN_PREFIX = b"probe-scan/"
CUT_OFF_LOG = "bytes of replies wait unread"  # the node's log line when it cuts a client off
UNREAD_CUT_OFF_DEADLINE_S = 30.0


async def fill_scan_range(cluster: LocalCluster, scale: ProbeScale) -> tuple[str, bytes]:
    """`scan_keys` values of `scan_value_bytes` under one tablet's SCAN_PREFIX; (tablet id, prefix)."""
    tablet = cluster.config.tablets[0]
    prefix = key_in(tablet, SCAN_PREFIX)
    value = os.urandom(scale.scan_value_bytes)
    async with cluster_client(cluster, timeout_s=30) as client:
        for i in range(scale.scan_keys):
            await client.put(prefix + b"%04d" % i, value)
    return tablet.id, prefix


async def scan_target(cluster: LocalCluster, scale: ProbeScale) -> tuple[str, bytes, str]:
    """The scan range (filled once per cluster) and its tablet's leader."""
    tablet_id, prefix = cluster.config.tablets[0].id, key_in(cluster.config.tablets[0], SCAN_PREFIX)
    marker = cluster.data_dir / f"probe-scan-filled-{scale.scan_keys}x{scale.scan_value_bytes}"
    if not marker.exists():
        await fill_scan_range(cluster, scale)
        marker.touch()
    # Restarted nodes elect some leader first, and the preferred one takes over soon after: a probe
    # aimed at the first would meet not_leader replies. Wait for the move (or take what there is).
    preferred = cluster.config.tablets[0].preferred_leader
    with trio.move_on_after(20):
        while (await wait_leaders(cluster))[tablet_id] != preferred:
            await trio.sleep(0.2)
    leader = (await wait_leaders(cluster))[tablet_id]
    return tablet_id, prefix, leader


async def probe_unread_scans(cluster: LocalCluster, seconds: float, scale: ProbeScale) -> ProbeResult:
    """One client connection sends many scans over large values and reads no reply until the node
    cuts it off (or UNREAD_CUT_OFF_DEADLINE_S passes): the defined answer to unread replies."""
    tablet_id, prefix, leader = await scan_target(cluster, scale)
    clock = new_clock(cluster)
    request = api.ScanRequest(tablet_id, prefix, prefix + b"\xff", api.ReadMode.STRONG, None, 1000, 10_000_000_000)
    cut_offs_before = log_text(cluster, leader).count(CUT_OFF_LOG)
    stream = await client_stream(cluster, leader)
    sent = 0
    held_s = 0.0
    began = trio.current_time()
    try:
        # Hold the replies unread for `seconds`, and on until the node cuts us off (its defined
        # answer once max_queued_reply_bytes of replies wait), within UNREAD_CUT_OFF_DEADLINE_S:
        # draining before the replies were built would read them and prove nothing.
        with trio.move_on_after(max(seconds, UNREAD_CUT_OFF_DEADLINE_S)):
            try:
                for request_id in range(1, scale.unread_scan_requests + 1):
                    await stream.send_all(request_frame(clock, request_id, request))
                    sent += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            await trio.sleep_until(began + seconds)
            while log_text(cluster, leader).count(CUT_OFF_LOG) == cut_offs_before:
                await trio.sleep(0.2)
        held_s = trio.current_time() - began
        # Now drain: a node that cut us off closes after what was already in the socket buffers.
        closed, received = await closed_by_peer(stream, 20.0)
    finally:
        await close_quietly(stream)
    reply_bytes = min(scale.scan_keys * scale.scan_value_bytes, MAX_SCAN_REPLY_BYTES + scale.scan_value_bytes)
    log_says = log_text(cluster, leader).count(CUT_OFF_LOG) > cut_offs_before
    return ProbeResult(
        "unread-scans",
        f"{sent} scans of {scale.scan_keys} x {scale.scan_value_bytes / MIB:g} MiB rows sent to {leader} on one "
        f"connection, replies unread for {held_s:.1f}s; then drained {received / MIB:.0f} MiB "
        f"(all replies: ~{sent * reply_bytes / MIB:.0f} MiB), {'closed by the node' if closed else 'still open'}",
        [("the connection was cut off (max_queued_reply_bytes)", closed and log_says)],
    )


async def probe_unbounded_scan(cluster: LocalCluster, seconds: float, scale: ProbeScale) -> ProbeResult:
    """Scans asking for an unbounded row count over large values, repeated for `seconds`."""
    tablet_id, prefix, leader = await scan_target(cluster, scale)
    request = api.ScanRequest(tablet_id, prefix, prefix + b"\xff", api.ReadMode.STRONG, None, 1 << 62, 10_000_000_000)
    calls = 0
    largest = 0
    all_more = True
    moved = unavailable = 0
    with trio.move_on_after(seconds):
        while True:
            async with open_client_connection(*cluster.address(leader), cluster_id=cluster.config.cluster_id,
                                              clock=new_clock(cluster), timeout_s=NETWORK_DEADLINE_S,
                                              tls=cluster.tls) as conn:
                while True:
                    reply = await conn.call(request, timeout_s=NETWORK_DEADLINE_S)
                    if isinstance(reply, api.ErrorReply) and reply.leader_hint and moved < 10:
                        leader, moved = reply.leader_hint, moved + 1  # leadership moved: follow it
                        break
                    if isinstance(reply, api.ErrorReply) and reply.code is api.ErrorCode.UNAVAILABLE:
                        unavailable += 1  # e.g. fenced for a while on a loaded machine: ask again
                        await trio.sleep(0.2)
                        continue
                    assert isinstance(reply, api.ScanReply), reply
                    size = sum(len(row.key) + len(row.value) for row in reply.rows)
                    largest = max(largest, size)
                    whole = scale.scan_keys * scale.scan_value_bytes
                    all_more = all_more and (reply.more or size >= whole)
                    calls += 1
    async with cluster_client(cluster, timeout_s=30) as client:
        paged = await client.scan(prefix, prefix + b"\xff")
    bound = MAX_SCAN_REPLY_BYTES + scale.scan_value_bytes + 64  # past its first row, a reply holds at most 4 MiB
    return ProbeResult(
        "unbounded-scan",
        f"{calls} scans with limit 2^62 over {scale.scan_keys} x {scale.scan_value_bytes / MIB:g} MiB rows on "
        f"{leader}: largest reply {largest / MIB:.1f} MiB ({unavailable} unavailable replies asked again); "
        f"a paging scan read {len(paged.rows)} rows",
        [("every reply within the 4 MiB reply bound", 0 < largest <= bound),
         ("a cut reply says more", all_more),
         ("paging reads every row", len(paged.rows) == scale.scan_keys)],
    )


async def probe_oversized(cluster: LocalCluster, seconds: float, scale: ProbeScale) -> ProbeResult:
    """Repeated oversized writes: a raw frame of `oversize_bytes`, a put over max_value_bytes that the
    client does not check (the node must refuse), and the same size through the client (never sent)."""
    node = target_node(cluster)
    big = b"x" * scale.oversize_bytes
    over_limit = b"x" * (cluster.config.max_value_bytes + 1)
    header = len(big).to_bytes(wire.FRAME_HEADER_BYTES, "big")
    rounds = raw_closed = node_refused = client_refused = 0
    raw_sent = 0
    problems: list[str] = []
    async with cluster_client(cluster, timeout_s=30) as client:
        await client.refresh_map()
        unchecked = await unchecked_client_stack(client)
        with trio.move_on_after(seconds):
            while True:
                rounds += 1
                stream = await client_stream(cluster, node)
                try:
                    try:
                        with trio.fail_after(NETWORK_DEADLINE_S):
                            await stream.send_all(header)
                            for offset in range(0, len(big), MIB):
                                await stream.send_all(big[offset:offset + MIB])
                                raw_sent += MIB
                        closed, _ = await closed_by_peer(stream, NETWORK_DEADLINE_S)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        closed = True
                    except trio.TooSlowError:
                        closed = False  # the node kept reading a frame over its limit
                    raw_closed += closed
                finally:
                    await close_quietly(stream)
                try:
                    await unchecked(b"probe-oversized-node", over_limit)
                    problems.append("a put over max_value_bytes was accepted")
                except Refused as error:
                    node_refused += "max_value_bytes" in str(error)
                try:
                    await client.put(b"probe-oversized-client", big)
                    problems.append(f"a {len(big)}-byte put was accepted")
                except TooLarge:
                    client_refused += 1
        nothing_written = [(await client.get(key)).value for key in (b"probe-oversized-node", b"probe-oversized-client")] \
            == [None, None]
    return ProbeResult(
        "oversized",
        f"{rounds} rounds on {node}: a raw {len(big) / MIB:.0f} MiB frame ({raw_sent / MIB:.0f} MiB pushed in all, "
        f"{raw_closed} closed by the node), an unchecked put of max_value_bytes+1 ({node_refused} refused by "
        f"the node), a {len(big) / MIB:.0f} MiB client put ({client_refused} refused before sending)"
        + (f"; {'; '.join(problems)}" if problems else ""),
        # The last round may be cut short by the probe's end: it proves nothing either way.
        [("every oversized frame closed by the node", rounds > 1 and raw_closed >= rounds - 1),
         ("every over-limit put refused definitely (node and client)",
          not problems and node_refused >= rounds - 1 and client_refused >= rounds - 1),
         ("nothing of them written", nothing_written)],
    )


async def unchecked_client_stack(client: Client) -> Callable[[bytes, bytes], Awaitable[Any]]:
    """A put that skips the client's own size check, as a client ignoring the limits would send it."""

    async def put(key: bytes, value: bytes) -> Any:
        check_sizes = client.check_sizes
        client.check_sizes = lambda writes: None  # type: ignore[method-assign]
        try:
            return await client.put(key, value)
        finally:
            client.check_sizes = check_sizes  # type: ignore[method-assign]

    return put


async def tablet_applied(cluster: LocalCluster, node_id: str, tablet_id: str) -> int | None:
    statuses = await gather(cluster.config, cluster.tls)
    reply = statuses.get(node_id)
    if reply is None:
        return None
    return next((t.applied_index for t in reply.tablets if t.id == tablet_id), None)


async def probe_follower_catchup(cluster: LocalCluster, seconds: float, scale: ProbeScale) -> ProbeResult:
    """SIGSTOP a follower, write `catchup_values` max-size values to a tablet it replicates, SIGCONT it:
    it must catch up, and the tablet keep its leader. (`seconds` is not used: the writes take what they take.)"""
    found = await wait_leaders(cluster)
    tablet = next((t for t in cluster.config.tablets if found[t.id] == target_node(cluster)), cluster.config.tablets[0])
    leader = found[tablet.id]
    follower = next(n for n in tablet.replicas if n != leader)
    value = os.urandom(scale.catchup_value_bytes)
    outcomes: dict[str, int] = {}
    process = cluster.processes[follower]
    began = trio.current_time()
    process.send_signal(signal.SIGSTOP)
    try:
        async with cluster_client(cluster, timeout_s=30) as client:
            for i in range(scale.catchup_values):
                try:
                    await client.put(key_in(tablet, b"probe-catchup/%03d" % i), value)
                    outcome = "ok"
                except ClientError as error:
                    outcome = type(error).__name__
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        process.send_signal(signal.SIGCONT)
    written_s = trio.current_time() - began
    after: dict[str, str | None] = {}
    target = 0
    with trio.move_on_after(30):  # status replies may lag while the resumed node catches up
        # The target: the applied index of the tablet's serving leader, read once it serves again
        # (a status that timed out, or a leader not yet serving, is asked again, not taken as 0).
        while True:
            after = await leaders(cluster)
            serving = after.get(tablet.id)
            if serving:
                target = await tablet_applied(cluster, serving, tablet.id) or 0
                if target > 0:
                    break
            await trio.sleep(0.2)
    caught_up_s = math.nan
    with trio.move_on_after(60):
        while target > 0 and (await tablet_applied(cluster, follower, tablet.id) or -1) < target:
            await trio.sleep(0.2)
        caught_up_s = trio.current_time() - began - written_s
    return ProbeResult(
        "follower-catchup",
        f"{follower} SIGSTOPped while {scale.catchup_values} x {scale.catchup_value_bytes / MIB:g} MiB values went "
        f"to {tablet.id} (leader {leader}) in {written_s:.1f}s ({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}); "
        f"resumed: caught up to index {target} in {caught_up_s:.1f}s; leader now {after.get(tablet.id)}",
        [("every max-size write committed", outcomes.get("ok", 0) == scale.catchup_values),
         ("the follower caught up within 60 s", target > 0 and not math.isnan(caught_up_s)),
         ("the tablet kept its leader", after.get(tablet.id) == leader)],
    )


async def probe_garbage(cluster: LocalCluster, seconds: float, scale: ProbeScale) -> ProbeResult:
    """Garbage bytes and malformed frames on each node's port, from no certificate, a client's and a node's."""
    rng = random.Random(16)
    clock = new_clock(cluster)
    cluster_id = cluster.config.cluster_id

    async def handshaken(node: str) -> trio.SSLStream:
        return await client_stream(cluster, node)

    async def as_peer(node: str) -> trio.SSLStream:
        speaker = next(n for n in cluster.node_ids if n != node)
        stream = await tls_stream(cluster, node, as_node=speaker)
        await stream.send_all(frame(Handshake(wire.PROTOCOL_VERSION, cluster_id, speaker)))
        return stream

    async def plain(node: str) -> trio.SocketStream:
        return await trio.open_tcp_stream(*cluster.address(node))

    async def tls(node: str) -> trio.SSLStream:
        return await tls_stream(cluster, node)

    def garbage() -> bytes:
        return rng.randbytes(rng.randrange(1, 4096))

    variants: list[tuple[str, Callable[[str], Awaitable[Any]], Callable[[], bytes]]] = [
        ("plain TCP garbage", plain, garbage),
        ("TLS garbage before the handshake", tls, garbage),
        ("bad CBOR frame", handshaken, lambda: wire.encode_frame(b"\xff\xfe" + garbage())),
        ("length prefix over the limit", handshaken, lambda: (0xFFFFFFF0).to_bytes(4, "big") + garbage()),
        ("unknown type id", handshaken, lambda: wire.encode_frame(bytes([0x82, 0x1a, 0, 1, 0x86, 0xa0, 0x80]))),
        ("envelope of a wrong shape", handshaken, lambda: frame(Handshake(wire.PROTOCOL_VERSION, cluster_id, "client"))),
        ("peer: bad CBOR frame", as_peer, lambda: wire.encode_frame(b"\xff" + garbage())),
        ("peer: request with garbage body", as_peer,
         lambda: wire.encode_frame(wire.encode(Envelope(clock.now(), Kind.ONE_WAY, 0, wire.Ping(b"")))[:-1] + b"\xff")),
    ]
    sent = closed = 0
    not_closed: dict[str, int] = {}
    with trio.move_on_after(seconds):
        for round_number in range(1 << 62):
            name, opener, payload = variants[round_number % len(variants)]
            node = cluster.node_ids[round_number % len(cluster.node_ids)]
            with trio.fail_after(NETWORK_DEADLINE_S):
                stream = await opener(node)
            try:
                try:
                    data = payload()
                    with trio.fail_after(NETWORK_DEADLINE_S):
                        await stream.send_all(data)
                    sent += len(data)
                    was_closed, _ = await closed_by_peer(stream, PEER_PORT_DEADLINE_S)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    was_closed = True
            finally:
                await close_quietly(stream)
            closed += was_closed
            if not was_closed:
                not_closed[name] = not_closed.get(name, 0) + 1
    rounds = closed + sum(not_closed.values())
    return ProbeResult(
        "garbage",
        f"{rounds} connections over {len(variants)} kinds ({', '.join(v[0] for v in variants)}) to every node, "
        f"{sent / 1024:.0f} KiB of garbage: {closed} closed by the node"
        + (f"; left open: {not_closed}" if not_closed else ""),
        [("every garbage connection closed by the node", not not_closed and rounds > 0)],
    )


PROBES: dict[str, Callable[[LocalCluster, float, ProbeScale], Awaitable[ProbeResult]]] = {
    "flood": probe_flood,
    "idle": probe_idle,
    "half-frames": probe_half_frames,
    "unread-scans": probe_unread_scans,
    "unbounded-scan": probe_unbounded_scan,
    "oversized": probe_oversized,
    "follower-catchup": probe_follower_catchup,
    "garbage": probe_garbage,
}


@attrs.frozen
class Observed:
    """One probe run under observation: its result, the nodes' RSS, the normal client's writes, the after-checks."""

    result: ProbeResult
    rss_first_mb: dict[str, float]  # anonymous memory (RssSampler says why)
    rss_peak_mb: dict[str, float]
    dead: tuple[str, ...] = attrs.field(converter=tuple)
    writes_after: str | None  # None: every tablet took a write after the probe
    file_first_mb: dict[str, float] = attrs.field(factory=dict)  # mapped files (LevelDB tables, libraries)
    file_peak_mb: dict[str, float] = attrs.field(factory=dict)

    def rss_growth_mb(self, node_id: str) -> float:
        return self.rss_peak_mb.get(node_id, 0.0) - self.rss_first_mb.get(node_id, 0.0)

    def file_growth_mb(self, node_id: str) -> float:
        return self.file_peak_mb.get(node_id, 0.0) - self.file_first_mb.get(node_id, 0.0)


async def observe(cluster: LocalCluster, name: str, seconds: float, scale: ProbeScale) -> Observed:
    """Run probe `name` while sampling every node's RSS; then check liveness and writes."""
    sampler = RssSampler(node_pids(cluster))
    sampler.sample()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        try:
            result = await PROBES[name](cluster, seconds, scale)
        except Exception as error:  # the probe itself broke (the node refused it rudely?): a failed check
            result = ProbeResult(name, f"the probe stopped on {type(error).__name__}: {error!r}",
                                 [(f"the probe ran to its end ({type(error).__name__}: {error})", False)])
        finally:
            sampler.sample()
            nursery.cancel_scope.cancel()
    dead = dead_nodes(cluster)
    writes_after = "nodes died" if dead else await writes_accepted(cluster)
    return Observed(result, {n: kb / 1024 for n, kb in sampler.first_kb.items()},
                    {n: kb / 1024 for n, kb in sampler.peak_kb.items()}, dead, writes_after,
                    {n: kb / 1024 for n, kb in sampler.file_first_kb.items()},
                    {n: kb / 1024 for n, kb in sampler.file_peak_kb.items()})


async def normal_client_during(cluster: LocalCluster, log: WriteLog, body: Callable[[], Awaitable[Any]]) -> Any:
    """Run `body()` while the normal client writes (into `log`) in this trio run."""
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(cluster_client(cluster))
        await client.refresh_map()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_steadily, client, tablet_keys(cluster, b"normal/"), log)
            try:
                return await body()
            finally:
                nursery.cancel_scope.cancel()


async def new_client_once(data_dir: str, node_id: str) -> str:
    """One new TLS client connection to `node_id`, one status request: "served", or why not."""
    cluster = LocalCluster.existing(pathlib.Path(data_dir))
    try:
        async with open_client_connection(*cluster.address(node_id), cluster_id=cluster.config.cluster_id,
                                          clock=new_clock(cluster), timeout_s=3, tls=cluster.tls) as conn:
            await conn.call(api.StatusRequest(), timeout_s=3)
        return "served"
    except Exception as error:  # refused is what a flood could cause; say what happened
        return f"refused ({type(error).__name__}: {error})"


if __name__ == "__main__":  # `python -m tools.probes new-client DIR NODE`: the flood probe's new client
    if len(sys.argv) != 4 or sys.argv[1] != "new-client":
        sys.exit("usage: python -m tools.probes new-client DATA_DIR NODE_ID")
    print(trio.run(new_client_once, sys.argv[2], sys.argv[3]), flush=True)
