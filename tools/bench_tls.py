"""`chronodb bench tls`: TLS round trips over loopback, TlsStream beside trio.SSLStream and bare TCP.

Setup: one process, one trio event loop, a TCP connection on 127.0.0.1
between two tasks; the client sends `--payload` bytes and waits for the
server's echo, one message in flight, for `--seconds` per figure. The same
fresh certificates (a throwaway CA, node n1 serving, client root dialing,
TLS 1.3 as the nodes use them) for both TLS figures. It prints round
trips/s and the process's CPU per round trip (both ends), then each TLS
stream's cost over bare TCP, and TlsStream's CPU per round trip as a ratio
of trio.SSLStream's. Figures alternate (`--rounds` times each) and the
median is shown, as this machine's speed drifts.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time
from typing import Callable

import trio

from tools.bench import positive_int, positive_seconds, print_setup
from tools.errors import CliError
from txn.net.tls import ensure_cluster_certs, load_client_tls, load_node_tls
from txn.net.tls_stream import TlsStream

KINDS = ("bare TCP", "trio.SSLStream", "TlsStream")


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Both ends of one loopback TCP connection: (accepted, dialed)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    accepted: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:
        async def accept() -> None:
            accepted.append(await listeners[0].accept())
        nursery.start_soon(accept)
        dialed = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    await listeners[0].aclose()
    return accepted[0], dialed


async def _round_trips(kind: str, certs: pathlib.Path, payload: bytes, seconds: float) -> tuple[float, float]:
    """(round trips/s, CPU us per round trip) for one kind of stream."""
    server_raw, client_raw = await tcp_pair()
    server: trio.abc.Stream = server_raw
    client: trio.abc.Stream = client_raw
    make: dict[str, Callable[..., trio.abc.Stream]] = {"trio.SSLStream": trio.SSLStream, "TlsStream": TlsStream}
    if kind in make:
        node, dialer = load_node_tls(certs, "n1"), load_client_tls(certs)
        server = make[kind](server_raw, node.server, server_side=True)
        client = make[kind](client_raw, dialer.context, server_side=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)  # type: ignore[attr-defined]
            await client.do_handshake()  # type: ignore[attr-defined]
    count = 0
    async with trio.open_nursery() as nursery:
        async def echo() -> None:
            while data := await server.receive_some(1 << 16):
                await server.send_all(data)
        nursery.start_soon(echo)
        deadline = trio.current_time() + seconds
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        while trio.current_time() < deadline:
            await client.send_all(payload)
            received = 0
            while received < len(payload):
                received += len(await client.receive_some(1 << 16))
            count += 1
        cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
        nursery.cancel_scope.cancel()
    await client.aclose()
    await server.aclose()
    return count / wall, cpu / count * 1e6


MAX_PAYLOAD_BYTES = 64 << 10  # one message: the echo writes back while the sender may still be sending


def run(args: argparse.Namespace) -> int:
    if args.payload > MAX_PAYLOAD_BYTES:
        raise CliError(f"--payload is at most {MAX_PAYLOAD_BYTES} bytes (a message, echoed as it arrives), not {args.payload}")
    print_setup("tls", transport="trio TCP on 127.0.0.1, both ends in this process, 1 message in flight",
                payload=f"{args.payload} bytes", duration=f"{args.seconds}s per figure, {args.rounds} rounds alternated",
                tls="TLS 1.3, the nodes' contexts (txn/net/tls.py), fresh throwaway certificates")
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="chronodb-bench-tls-") as directory:
        certs = pathlib.Path(directory)
        ensure_cluster_certs(certs, [("n1", "127.0.0.1")])
        for _ in range(args.rounds):
            for kind in KINDS:
                results[kind].append(trio.run(_round_trips, kind, certs, b"x" * args.payload, args.seconds))
    median: dict[str, tuple[float, float]] = {}
    print(f"{'stream':<16} {'round trips/s':>14} {'CPU us/round trip':>18}")
    for kind in KINDS:
        median[kind] = (statistics.median(r for r, _ in results[kind]), statistics.median(c for _, c in results[kind]))
        print(f"{kind:<16} {median[kind][0]:>14,.0f} {median[kind][1]:>18.1f}")
    bare = median["bare TCP"][1]
    for kind in KINDS[1:]:
        print(f"{kind}: TLS adds {median[kind][1] - bare:.1f} us of CPU per round trip over bare TCP")
    print(f"TlsStream / trio.SSLStream: CPU per round trip x{median['TlsStream'][1] / median['trio.SSLStream'][1]:.2f}, "
          f"round trips/s x{median['TlsStream'][0] / median['trio.SSLStream'][0]:.2f}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tls", help="TLS round trips: chronodb's TlsStream beside trio.SSLStream and bare TCP")
    parser.add_argument("--seconds", type=positive_seconds, default=1.0, help="measuring time per figure (default 1.0)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="rounds of the three figures, alternated (default 3)")
    parser.add_argument("--payload", type=positive_int, default=100, help="bytes per message, at most 65536 (default 100)")
    parser.set_defaults(func=run)
