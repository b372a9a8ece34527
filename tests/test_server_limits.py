"""Server-wide limits over real loopback TCP: ``max_sessions`` (connections over it get FIN
REFUSED, no session handler, refusals logged once per interval), the memory budget shared by
every session of a server, and the accept loop when the process runs out of file
descriptors (EMFILE, in a subprocess with a low RLIMIT_NOFILE)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from session_util import Accepted, echo, eventually

import mio
from mio import api
from mio.budget import DEFAULT_SERVER_MEMORY
from mio.wire import ErrorCode

HOST = "127.0.0.1"


async def echo_once(session: mio.Session, data: bytes = b"ping") -> bytes:
    stream = await session.open_stream()
    stream.write(data)
    stream.write_eof()
    return await asyncio.wait_for(stream.read(), 10)


def server_records(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mio.server" and r.levelno == logging.WARNING and text in r.getMessage()
    ]


# ---------------------------------------------------------------------------- max_sessions
async def test_connections_over_max_sessions_are_refused(
    loop_kind: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One log line per hour at most: the count of lines below cannot depend on how fast
    # the machine is.
    monkeypatch.setattr(api, "LOG_INTERVAL", 3600.0)
    caplog.set_level(logging.WARNING, logger="mio.server")
    handled: list[mio.Session] = []

    async def on_session(session: mio.Session) -> None:
        handled.append(session)

    server = await mio.serve(echo, HOST, 0, session_handler=on_session, max_sessions=2)
    clients: list[mio.Session] = []
    try:
        assert server.max_sessions == 2
        for _ in range(2):
            clients.append(await mio.connect(HOST, server.port))
            assert await echo_once(clients[-1]) == b"ping"
        # Five more: each refused with FIN REFUSED, seen by the client as the session's
        # close error, on the first operation that waits.
        for _ in range(5):
            refused = await mio.connect(HOST, server.port)
            clients.append(refused)
            with pytest.raises(mio.SessionClosedError) as info:
                await echo_once(refused, b"x" * 100_000)
            assert info.value.code == ErrorCode.REFUSED
            assert "REFUSED" in str(info.value)
            await asyncio.wait_for(refused.wait_closed(), 10)
            assert refused.close_error is not None
            assert refused.close_error.code == ErrorCode.REFUSED
        assert server.stats["refused"] == 5
        assert server.stats["sessions"] == 2
        assert len(handled) == 2  # no session handler for a refused connection
        # Logged once, not once per connection.
        assert len(server_records(caplog, "refused")) == 1
        assert "max_sessions 2" in server_records(caplog, "refused")[0]
        # The sessions under the limit were not disturbed.
        for client in clients[:2]:
            assert await echo_once(client, b"still here") == b"still here"
        # A session that ends makes room for a new one.
        clients[0].close()
        await clients[0].wait_closed()
        await eventually(lambda: server.stats["sessions"] == 1)
        clients.append(await mio.connect(HOST, server.port))
        assert await echo_once(clients[-1]) == b"ping"
        assert len(handled) == 3
        assert server.stats["refused"] == 5
    finally:
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()
    # Closing the server logs the count still pending: 1 + 4 = every refusal, in 2 lines.
    lines = server_records(caplog, "refused")
    assert len(lines) == 2
    assert "refused 4 more connections" in lines[1]


async def test_unlimited_sessions_and_validation() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        await mio.serve(echo, HOST, 0, max_sessions=0)
    server = await mio.serve(echo, HOST, 0, max_sessions=None)
    clients = []
    try:
        assert server.max_sessions is None
        for _ in range(5):
            clients.append(await mio.connect(HOST, server.port))
            assert await echo_once(clients[-1]) == b"ping"
        assert server.stats["refused"] == 0
    finally:
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()
    default = await mio.serve(echo, HOST, 0)
    try:
        assert default.max_sessions == api.DEFAULT_MAX_SESSIONS == 4096
    finally:
        default.close()
        await default.wait_closed()


async def test_start_serving_later_and_serve_forever(loop_kind: str) -> None:
    """The listener's life cycle is asyncio.Server's (mio accepts itself on the default
    loop): nothing accepted before it starts, serve_forever serves until cancelled, then
    stops listening while the sessions go on."""
    later = await mio.serve(echo, HOST, 0, start_serving=False)
    try:
        assert not later.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await mio.connect(HOST, later.port)
        await later.start_serving()
        assert later.is_serving()
        client = await mio.connect(HOST, later.port)
        assert await echo_once(client) == b"ping"
    finally:
        later.close()
        await later.wait_closed()
    server = await mio.serve(echo, HOST, 0, start_serving=False)
    port = server.port
    forever = asyncio.ensure_future(server.serve_forever())
    try:
        await eventually(server.is_serving)
        client = await mio.connect(HOST, port)
        assert await echo_once(client) == b"ping"
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await mio.connect(HOST, port)
        assert await echo_once(client, b"still served") == b"still served"
    finally:
        forever.cancel()
        server.close()
        await server.wait_closed()
    await asyncio.wait_for(client.wait_closed(), 10)


async def test_refused_unix_connection(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "mio.sock")
    server = await mio.serve_unix(echo, path, max_sessions=1)
    try:
        first = await mio.connect_unix(path)
        assert await echo_once(first) == b"ping"
        second = await mio.connect_unix(path)
        with pytest.raises(mio.SessionClosedError) as info:
            await echo_once(second)
        assert info.value.code == ErrorCode.REFUSED
        assert server.stats["refused"] == 1
        first.close()
        second.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_refusals_log_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """The rate limiter, driven by hand (no clock): the first event logs at once, the others
    are counted and logged in one line per interval, nothing is logged for a quiet one."""
    caplog.set_level(logging.WARNING, logger="mio.server")
    limiter = api._RateLimitedLog("first %s", "%d more in %g s", interval=3600.0)
    for i in range(3):
        limiter.hit(i)
    assert [r.getMessage() for r in caplog.records] == ["first 0"]
    assert limiter.total == 3
    limiter._tick()  # the interval ends: the count since the first line
    assert [r.getMessage() for r in caplog.records][1:] == ["2 more in 3600 s"]
    limiter._tick()  # a quiet interval: no line, and the next event logs at once again
    assert len(caplog.records) == 2
    assert limiter._timer is None
    limiter.hit(9)
    assert caplog.records[-1].getMessage() == "first 9"
    limiter.hit(10)
    limiter.close()  # flushes what is pending
    assert caplog.records[-1].getMessage() == "1 more in 3600 s"
    assert limiter._timer is None
    assert limiter.total == 5


# ---------------------------------------------------------------------------- memory budget
async def test_server_budget_is_shared_by_its_sessions(loop_kind: str) -> None:
    accepted = Accepted()
    server = await mio.serve(None, HOST, 0, session_handler=accepted)
    clients: list[mio.Session] = []
    try:
        budget = server.budget
        assert isinstance(budget, mio.MemoryBudget)
        assert budget.limit == DEFAULT_SERVER_MEMORY
        for _ in range(3):
            clients.append(await mio.connect(HOST, server.port))
        sessions = [await accepted.get() for _ in clients]
        assert budget.sessions == 3
        # Every client sends 100 000 bytes that the server's application does not read yet
        # (within the 256 KiB initial window: no window update needed).
        size = 100_000
        for client in clients:
            stream = await client.open_stream()
            stream.write(b"m" * size)
            await stream.drain()
        await eventually(lambda: budget.held == 3 * size)
        assert budget.held == sum(s.memory["inbound"] for s in sessions)
        assert server.stats["memory_held"] == 3 * size
        # The application reads one session's stream: the shared budget falls by as much.
        stream = await asyncio.wait_for(sessions[0].accept_stream(), 10)
        assert await asyncio.wait_for(stream.readexactly(size), 10) == b"m" * size
        assert budget.held == 2 * size
        for session in sessions[1:]:
            stream = await asyncio.wait_for(session.accept_stream(), 10)
            await asyncio.wait_for(stream.readexactly(size), 10)
        assert budget.held == 0
        assert budget.peak >= 3 * size
        for client in clients:
            client.close()
        await eventually(lambda: budget.sessions == 0)
    finally:
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()


async def test_a_given_budget_reaches_every_session() -> None:
    """``budget=`` of serve (two servers sharing one), connect, session_from_socket and pipe."""
    shared = mio.MemoryBudget(64 * 1024 * 1024)
    accepted = Accepted()
    one = await mio.serve(None, HOST, 0, budget=shared, session_handler=accepted)
    two = await mio.serve(None, HOST, 0, budget=shared, session_handler=accepted)
    mine = mio.MemoryBudget(1024 * 1024)
    sessions: list[mio.Session] = []
    try:
        assert one.budget is shared
        assert two.budget is shared
        sessions.append(await mio.connect(HOST, one.port, budget=mine))
        sessions.append(await mio.connect(HOST, two.port))
        await accepted.get()
        await accepted.get()
        assert shared.sessions == 2
        assert mine.sessions == 1
        a, b = socket.socketpair()
        sessions.append(await mio.session_from_socket(a, client=True, budget=mine))
        sessions.append(await mio.session_from_socket(b, client=False, budget=mine))
        assert mine.sessions == 3
        client, server = mio.pipe(budget=mine)
        sessions += [client, server]
        assert mine.sessions == 5
        stream = await client.open_stream()
        stream.write(b"p" * 1000)
        await eventually(lambda: mine.held == 1000)
        peer = await asyncio.wait_for(server.accept_stream(), 10)
        assert await peer.readexactly(1000) == b"p" * 1000
        assert mine.held == 0
    finally:
        for session in sessions:
            session.close()
        for session in sessions:
            await session.wait_closed()
        one.close()
        two.close()
        await one.wait_closed()
        await two.wait_closed()
    assert mine.sessions == 0
    assert shared.sessions == 0


async def test_failed_tls_handshakes_leave_nothing_in_a_budget(
    loop_kind: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A connection whose TLS handshake fails never gets a connected session (and never
    closes one): neither the server's budget nor a client's may keep counting it."""
    server_ctx, client_ctx = tls
    server = await mio.serve(echo, HOST, 0, ssl=server_ctx, max_sessions=1)
    try:
        for _ in range(3):  # plain text to a TLS listener
            reader, writer = await asyncio.open_connection(HOST, server.port)
            writer.write(b"not a TLS client hello\r\n" * 20)
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
            await writer.wait_closed()
        mine = mio.MemoryBudget(1024 * 1024)
        for _ in range(3):  # a client that does not trust the server's certificate
            with pytest.raises(ssl.SSLError):
                await mio.connect(HOST, server.port, ssl=ssl.create_default_context(), budget=mine)
        assert mine.sessions == 0
        await eventually(lambda: server.budget.sessions == 0)
        # The limit counts connected sessions only: a good client is served, the next one
        # is refused after its handshake.
        good = await mio.connect(HOST, server.port, ssl=client_ctx, budget=mine)
        assert await echo_once(good) == b"ping"
        assert mine.sessions == 1
        assert server.budget.sessions == 1
        refused = await mio.connect(HOST, server.port, ssl=client_ctx)
        with pytest.raises(mio.SessionClosedError) as info:
            await echo_once(refused)
        assert info.value.code == ErrorCode.REFUSED
        good.close()
        refused.close()
        await good.wait_closed()
        assert mine.sessions == 0
    finally:
        server.close()
        await server.wait_closed()
    assert server.budget.sessions == 0


# ---------------------------------------------------------------------------- EMFILE
#: The server process: a mio echo server on the given loop whose RLIMIT_NOFILE leaves it
#: FREE descriptors once it listens. Commands on stdin, one JSON line answered for each:
#: "stats", "wait SECONDS" (loop time), "quit".
SERVER_CHILD = textwrap.dedent(
    """
    import asyncio, json, logging, os, resource, sys
    import mio
    from mio import api

    api.LOG_INTERVAL = 3600.0  # one line per hour at most: counts below cannot race a clock
    kind, free = sys.argv[1], int(sys.argv[2])
    problems = []  # WARNING and above: how many, and the first few

    class Count(logging.Handler):
        def emit(self, record):
            problems.append([record.name, record.levelname, record.getMessage()[:200]])

    logging.getLogger().addHandler(Count(logging.WARNING))

    async def echo(stream):
        async for chunk in stream:
            stream.write(chunk)

    async def main():
        loop = asyncio.get_running_loop()
        server = await mio.serve(echo, "127.0.0.1", 0, backlog=1024)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        in_use = len(os.listdir("/proc/self/fd")) - 1  # listdir's own descriptor
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + free, hard))
        print(json.dumps({"port": server.port}), flush=True)
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "quit":
                break
            if line[0] == "wait":
                await asyncio.sleep(float(line[1]))
            stats = dict(server.stats)
            stats.update(logged=len(problems), first_logged=problems[:3])
            print(json.dumps(stats), flush=True)
        server.close()
        await server.wait_closed()

    if kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    """
)

FREE = 8  # descriptors left to the server once it listens
CLIENTS = 40  # raw connections made to it: far more than it can accept


class Child:
    def __init__(self, loop_kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_CHILD, loop_kind, str(FREE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._line()["port"])

    def _line(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready, "the server process did not answer within 30 s"
        line = self.proc.stdout.readline()
        assert line, f"the server process exited with {self.proc.wait(10)}"
        result: dict[str, object] = json.loads(line)
        return result

    def ask(self, command: str) -> dict[str, object]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
            except (AssertionError, OSError, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def fd_child(loop_kind: str) -> Iterator[Child]:
    if not sys.platform.startswith("linux"):
        pytest.skip("counts descriptors in /proc/self/fd")
    child = Child(loop_kind)
    try:
        yield child
    finally:
        child.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True if the server closed the connection (EOF or RST is waiting), without blocking."""
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


async def echo_through(port: int) -> bytes:
    session = await asyncio.wait_for(mio.connect(HOST, port), 10)
    try:
        return await echo_once(session, b"served again")
    finally:
        session.close()
        await session.wait_closed()


def test_accept_pauses_when_out_of_descriptors(loop_kind: str, fd_child: Child) -> None:
    """Out of descriptors, the accept loop neither spins nor floods the log, and a client is
    served again once descriptors are free.

    Before mio's own accept loop, asyncio (3.11) logged ``socket.accept() out of system
    resource`` with a traceback up to ``backlog`` times per retry, and its retries
    multiplied: ~1000 ERROR lines in the first second with backlog 1024, ~14 000 per second
    after six. uvloop (libuv) logs nothing and does not spin either: it accepts and closes
    the pending connections with a descriptor it holds in reserve.
    """
    conns = [socket.create_connection((HOST, fd_child.port), timeout=10) for _ in range(CLIENTS)]
    try:
        if loop_kind == "asyncio":
            stats = fd_child.ask("wait 0")
            for _ in range(200):
                if stats["accept_errors"] or stats["logged"]:
                    break
                stats = fd_child.ask("wait 0.05")
            assert stats["accept_errors"], stats
        else:
            # libuv closes what it cannot accept: those clients see EOF (or RST) at once.
            for _ in range(200):
                if any(closed_by_server(c) for c in conns):
                    break
                fd_child.ask("wait 0.05")
            assert any(closed_by_server(c) for c in conns)
        # A few retry periods later: still one line, and at most one failed accept() per
        # retry period (a spinning loop makes thousands).
        stats = fd_child.ask(f"wait {4 * api.ACCEPT_RETRY_DELAY}")
        logged = stats["first_logged"]
        assert isinstance(logged, list)
        if loop_kind == "asyncio":
            assert stats["logged"] == 1, stats
            name, level, message = logged[0]
            assert (name, level) == ("mio.server", "WARNING")
            assert "Too many open files" in message
            assert "pausing accepts" in message
            accept_errors = stats["accept_errors"]
            resumes = stats["accept_resumes"]
            assert isinstance(accept_errors, int)
            assert isinstance(resumes, int)
            # No spinning: every failed accept() pauses the listener, so there is at most
            # one failure per time it listens (the first start plus each resume).
            assert 1 <= accept_errors <= resumes + 1, stats
        else:
            assert stats["logged"] == 0, stats
            assert stats["accept_errors"] == 0
        assert 1 <= int(str(stats["sessions"])) <= FREE
    finally:
        for conn in conns:
            conn.close()
    # Descriptors free again: the sessions of the closed connections end, the backlog is
    # drained, and a new client is served.
    for _ in range(400):
        if fd_child.ask("wait 0.05")["sessions"] == 0:
            break
    assert asyncio.run(echo_through(fd_child.port)) == b"served again"
    stats = fd_child.ask("stats")
    assert stats["logged"] == (1 if loop_kind == "asyncio" else 0), stats
