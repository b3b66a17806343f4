"""`chronodb bench rpc`: framed RPC round trips/s beside a bare socket ping-pong.

Setup: a server process on 127.0.0.1 runs both a bare trio echo server and a
node transport (`open_tcp_transport`) whose handler answers `Ping(payload)`
with `Pong(payload)`. This process measures, over one connection each:
- bare ping-pong: the payload bytes sent and echoed back, 1 in flight, and
  64 in flight (64 callers, echoes matched first-in first-out);
- framed RPC: `ClientConnection.call(Ping(payload))`, with 1 caller and
  with 64 concurrent callers (frames, CBOR, envelope, HLC, request ids).
It prints each rate and the ratio RPC / bare at the same concurrency.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import deque
from typing import Any

import trio

from hlc import HybridClock
from hlc.physical import SystemClock
from tools.bench import positive_int, positive_seconds, print_setup
from txn.net.transport import open_client_connection, open_tcp_transport
from txn.wire import Ping, Pong

CONCURRENCY = 64
MAX_OFFSET_NS = 500_000_000


class EchoHandler:
    def handle_message(self, src: str, msg: Any) -> None:
        pass

    async def handle_request(self, src: str, msg: Any) -> Any:
        return Pong(msg.payload)


async def serve() -> None:
    """The server process: print both ports, serve until stdin closes."""

    async def echo(stream: trio.SocketStream) -> None:
        try:
            while data := await stream.receive_some(1 << 16):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, echo, 0)
        bare_port = listeners[0].socket.getsockname()[1]
        async with open_tcp_transport(node_id="server", cluster_id="bench", host="127.0.0.1", port=0, peers={},
                                      clock=HybridClock(SystemClock(), MAX_OFFSET_NS),
                                      handler=EchoHandler()) as transport:
            print(bare_port, transport.address[1], flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()


async def bare_rate(port: int, payload: bytes, callers: int, seconds: float) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    size = len(payload)
    waiters: deque[trio.Event] = deque()
    send_lock = trio.Lock()
    count = 0
    deadline = trio.current_time() + seconds

    async def reader() -> None:
        buffered = 0
        while True:
            buffered += len(await stream.receive_some(1 << 16))
            while buffered >= size:
                buffered -= size
                waiters.popleft().set()

    async def caller() -> None:
        nonlocal count
        while trio.current_time() < deadline:
            event = trio.Event()
            async with send_lock:
                waiters.append(event)
                await stream.send_all(payload)
            await event.wait()
            count += 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        async with trio.open_nursery() as callers_nursery:
            for _ in range(callers):
                callers_nursery.start_soon(caller)
        nursery.cancel_scope.cancel()
    elapsed = trio.current_time() - start
    await stream.aclose()
    return count / elapsed


async def rpc_rate(port: int, payload: bytes, callers: int, seconds: float) -> float:
    count = 0
    clock = HybridClock(SystemClock(), MAX_OFFSET_NS)
    async with open_client_connection("127.0.0.1", port, cluster_id="bench", clock=clock, timeout_s=5) as conn:
        deadline = trio.current_time() + seconds

        async def caller() -> None:
            nonlocal count
            ping = Ping(payload)
            while trio.current_time() < deadline:
                reply = await conn.call(ping, timeout_s=5)
                assert len(reply.payload) == len(payload)
                count += 1

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller)
        elapsed = trio.current_time() - start
    return count / elapsed


async def measure(bare_port: int, rpc_port: int, payload: bytes, seconds: float) -> None:
    for callers in (1, CONCURRENCY):
        bare = await bare_rate(bare_port, payload, callers, seconds)
        rpc = await rpc_rate(rpc_port, payload, callers, seconds)
        print(f"{callers:>3} caller(s): bare ping-pong {bare:>10,.0f} round trips/s   "
              f"framed RPC {rpc:>10,.0f} round trips/s   ratio {rpc / bare:.2f}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.serve:
        trio.run(serve)
        return 0
    print_setup("rpc", transport="trio TCP on 127.0.0.1, server in a second process, one connection per figure",
                payload=f"{args.payload} bytes", duration=f"{args.seconds}s per figure",
                callers=f"1 and {CONCURRENCY}")
    server = subprocess.Popen([sys.executable, "-m", "tools.cli", "bench", "rpc", "--serve"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdin is not None
        bare_port, rpc_port = (int(word) for word in server.stdout.readline().split())
        trio.run(measure, bare_port, rpc_port, b"x" * args.payload, args.seconds)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rpc", help="framed RPC round trips/s beside a bare socket ping-pong")
    parser.add_argument("--seconds", type=positive_seconds, default=2.0, help="measuring time per figure (default 2.0)")
    parser.add_argument("--payload", type=positive_int, default=64, help="payload bytes per request (default 64)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)
