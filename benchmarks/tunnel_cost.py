"""Per-MB and per-connection cost of ``mio tunnel``'s copy path, in one process.

Relay, agent, the tunneled service and the client all run in this process on 127.0.0.1
(the relay and agent as :class:`~mio.tunnel.relay.Relay` / :class:`~mio.tunnel.agent.Agent`
objects; the service, an asyncio Protocol, and the client, on raw sockets, are cheap), so
valgrind's callgrind counts every instruction of one run: a deterministic figure,
whatever else the machine does (the service and client are in it too). Run a
workload at two sizes; the difference divided by the difference in units is the marginal
cost per MB or per connection, start-up excluded::

    python benchmarks/tunnel_cost.py --one bulk --size 16        # 16 MB up, one connection
    python benchmarks/tunnel_cost.py --one conns --size 200      # 200 x (1 KB req, 1 KB resp)
    python benchmarks/tunnel_cost.py --one idle --size 500       # RSS and tasks, 500 idle

``benchmarks/tunnel_cost.sh`` runs the first two under callgrind and prints the marginal
counts; ``idle`` prints the resident memory per idle tunneled connection (relay and agent
together, one process) and the asyncio tasks per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import socket
import ssl
import sys
import tempfile
from pathlib import Path

from mio.tunnel.agent import Agent, AgentOptions
from mio.tunnel.link import LinkOptions
from mio.tunnel.relay import Relay, RelayOptions

HOST = "127.0.0.1"
SECRET = b"tunnel-cost-secret-0123456789abcdef"
MB = 1_000_000


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tls_contexts(work: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, bytes]:
    import subprocess

    from mio.tunnel.tls import certificate_digest

    cert, key = work / "relay.crt", work / "relay.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=relay", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client, certificate_digest(str(cert))


class _Service(asyncio.Protocol):
    """``sink``: counts to EOF, answers the count; ``echo``: echoes, closes after EOF."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.total = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        if self.kind == "echo":
            self.transport.write(data)

    def eof_received(self) -> bool:
        if self.kind == "sink":
            self.transport.write(b"%d" % self.total)
        self.transport.close()
        return True


async def service(kind: str) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Service(kind), HOST, 0)


async def _connect(port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, (HOST, port))
    return sock


async def _read_to_eof(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    parts = []
    while True:
        data = await loop.sock_recv(sock, 65536)
        if not data:
            return b"".join(parts)
        parts.append(data)


async def bulk(port: int, megabytes: int) -> None:
    loop = asyncio.get_running_loop()
    sock = await _connect(port)
    chunk = memoryview(b"x" * MB)
    for _ in range(megabytes):
        await loop.sock_sendall(sock, chunk)
    sock.shutdown(socket.SHUT_WR)
    answer = await _read_to_eof(sock)
    assert int(answer) == megabytes * MB, answer
    sock.close()


async def conns(port: int, count: int, clients: int = 16) -> None:
    loop = asyncio.get_running_loop()
    request = b"r" * 1000
    todo = iter(range(count))

    async def client() -> None:
        for _ in todo:
            sock = await _connect(port)
            await loop.sock_sendall(sock, request)
            sock.shutdown(socket.SHUT_WR)
            got = await _read_to_eof(sock)
            assert got == request, len(got)
            sock.close()

    await asyncio.gather(*(client() for _ in range(clients)))


async def idle(port: int, count: int) -> None:
    held = []
    gc.collect()
    before = rss_kib()
    tasks_before = len(asyncio.all_tasks())
    for _ in range(count):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"p")
        assert await reader.readexactly(1) == b"p"
        held.append(writer)
    await asyncio.sleep(0.5)
    gc.collect()
    after = rss_kib()
    tasks = len(asyncio.all_tasks()) - tasks_before
    print(
        f"{count} idle: {(after - before) / count:.1f} KiB per connection (relay, agent, "
        f"service and client, one process), {tasks / count:.2f} tasks each"
    )
    for writer in held:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    server = await service("sink" if args.one == "bulk" else "echo")
    service_port = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server_ctx = client_ctx = None
        binding = b""
        if args.tls:
            server_ctx, client_ctx, binding = tls_contexts(Path(tmp))
        relay = Relay(
            RelayOptions(
                host=HOST, port=0, publics=[("s", HOST, 0)], secret=SECRET, ssl=server_ctx,
                binding=binding, keepalive=None, idle_timeout=None, max_connections=100000,
                max_port_connections=None, max_source_connections=None,
            )
        )  # fmt: skip
        await relay.start()
        link = LinkOptions(
            host=HOST, port=relay.port(), secret=SECRET, role="agent", name="a",
            services=["s"], keepalive=None, ssl=client_ctx,
        )  # fmt: skip
        agent = Agent(AgentOptions(link=link, services={"s": (HOST, service_port)}))
        stop = asyncio.Event()
        running = asyncio.ensure_future(agent.run(stop))
        await agent.link.wait_ready(10)
        port = relay.port("s")
        if args.one == "bulk":
            await bulk(port, args.size)
        elif args.one == "conns":
            await conns(port, args.size)
        else:
            await idle(port, args.size)
        stop.set()
        await running
        await agent.shutdown(0)
        await relay.shutdown(0)
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", choices=("bulk", "conns", "idle"), required=True)
    parser.add_argument("--size", type=int, required=True, help="MB, or connections")
    parser.add_argument("--tls", action="store_true", help="TLS on the relay link")
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    asyncio.run(main(parser.parse_args()))
