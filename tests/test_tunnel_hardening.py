"""``mio tunnel`` under attack and misuse: limits, timeouts, bounded messages, auth rate
limiting, secret-file permissions, several agents per name, errors that name the culprit.

Relays and agents run in the test process (:class:`mio.tunnel.relay.Relay`,
:class:`mio.tunnel.agent.Agent`) on real sockets on 127.0.0.1; the command-line checks run
``python -m mio.tunnel.cli`` as a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tunnel_util import (
    HOST,
    SECRET,
    TUNNEL,
    Tunnel,
    echo,
    ping,
    posix,
    roundtrip,
    service,
    tls_files,
)
from tunnel_util import tunnel as tunnel  # the fixture

import mio
from mio.tunnel import auth, cli
from mio.tunnel import link as link_module
from mio.tunnel.agent import Agent, AgentOptions
from mio.tunnel.limits import Counter, FailureLimiter, SummaryLog
from mio.tunnel.link import Link, LinkOptions
from mio.tunnel.protocol import (
    MAX_DEPTH,
    MAX_MESSAGE_SIZE,
    TunnelProtocolError,
    json_depth,
    read_message,
)
from mio.tunnel.relay import Relay, RelayOptions

KEY = SECRET.encode()


# ============================================================================ helpers
@contextlib.asynccontextmanager
async def running_relay(**overrides: Any) -> AsyncIterator[Relay]:
    options = RelayOptions(host=HOST, port=0, publics=[], secret=KEY, keepalive=None)
    relay = Relay(dataclasses.replace(options, **overrides))
    await relay.start()
    try:
        yield relay
    finally:
        await relay.shutdown(0)


@contextlib.asynccontextmanager
async def running_agent(
    relay: Relay, services: dict[str, tuple[str, int]], *, name: str = "agent"
) -> AsyncIterator[Agent]:
    link = LinkOptions(
        host=HOST,
        port=relay.port(),
        secret=KEY,
        role="agent",
        name=name,
        services=list(services),
        keepalive=None,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    agent = Agent(AgentOptions(link=link, services=services))
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    try:
        await agent.link.wait_ready(10)
        yield agent
    finally:
        stop.set()
        await task
        await agent.shutdown(0)


def hostport(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


async def eventually(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def assert_reset(reader: asyncio.StreamReader, timeout: float = 5.0) -> None:
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), timeout)


async def read_all(reader: asyncio.StreamReader) -> None:
    while await asyncio.wait_for(reader.read(1024), 5):
        pass


def raw_message(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


# ============================================================================ units
def test_json_depth_is_found_without_recursion() -> None:
    assert json_depth('{"a":[1,{"b":"[[[{{"}]}') == 3
    assert json_depth('"[[[["') == 0
    assert json_depth('{"s":"a\\"[[[["}') == 1
    assert json_depth("[" * 100_000) == 100_000


async def test_deep_and_oversized_messages_are_protocol_errors() -> None:
    client, server = mio.pipe()
    async with client, server:
        for body in (
            b"[" * 10_000,  # json.loads would raise RecursionError
            json.dumps({"type": "auth", "x": [[[[["deep"]]]]]}).encode(),
        ):
            out = await client.open_stream()
            inp = await server.accept_stream()
            out.write(raw_message(body))
            with pytest.raises(TunnelProtocolError, match=f"deeper than {MAX_DEPTH}"):
                await read_message(inp)
        out = await client.open_stream()
        inp = await server.accept_stream()
        out.write(struct.pack(">H", MAX_MESSAGE_SIZE + 1))
        with pytest.raises(TunnelProtocolError, match="out of range"):
            await read_message(inp)


def test_failure_limiter_blocks_per_address_for_its_window() -> None:
    now = [100.0]
    limiter = FailureLimiter(3, 10.0, max_addresses=4, clock=lambda: now[0])
    for _ in range(2):
        limiter.failed("10.0.0.1")
    assert not limiter.blocked("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1")
    assert not limiter.blocked("10.0.0.2")  # per address
    now[0] += 9.9
    assert limiter.blocked("10.0.0.1")
    now[0] += 0.2  # the window is over
    assert not limiter.blocked("10.0.0.1")
    for i in range(100):  # memory stays bounded
        limiter.failed(f"10.1.0.{i}")
    assert len(limiter) <= 4


def test_counter_limits_per_key() -> None:
    counter = Counter(2)
    assert counter.acquire("a")
    assert counter.acquire("a")
    assert not counter.acquire("a")
    assert counter.acquire("b")
    counter.release("a")
    assert counter.acquire("a")
    for key in ("a", "a", "b"):
        counter.release(key)
    assert len(counter) == 0


async def test_summary_log_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.summary")
    summary = SummaryLog(logger, "first %s", "%d more in %g s", interval=0.05)
    with caplog.at_level(logging.WARNING, "test.summary"):
        for i in range(50):
            summary.hit(i)
        await asyncio.sleep(0.2)
        summary.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "test.summary"]
    assert messages == ["first 0", "49 more in 0.05 s"]
    assert summary.total == 50


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("0123456789abcdef0123\n")
    for mode in (0o644, 0o640, 0o604):
        path.chmod(mode)
        with pytest.raises(ValueError, match=r"--secret-file .*secret: accessible by group"):
            auth.load_secret(str(path), {})
        with pytest.raises(ValueError, match="--insecure-secret-file"):
            auth.load_secret(str(path), {})
    assert auth.load_secret(str(path), {}, allow_insecure=True) == b"0123456789abcdef0123"
    path.chmod(0o400)
    assert auth.load_secret(str(path), {}) == b"0123456789abcdef0123"


def test_documented_defaults() -> None:
    """The defaults docs/TUNNEL.md states."""
    options = RelayOptions(host=None, port=0, publics=[], secret=KEY)
    assert options.idle_timeout == 300.0
    assert options.idle_min_bytes == 1024
    assert options.max_port_connections == 1024
    assert options.max_source_connections == 64
    assert options.max_pending == 64
    assert options.max_pending_per_source == 8
    assert options.auth_failures == 5
    assert options.auth_failure_window == 60.0
    assert options.auth_timeout == 10.0
    assert options.max_connections == 256
    assert options.keepalive == 15.0
    assert MAX_DEPTH == 4
    assert MAX_MESSAGE_SIZE == 16 * 1024
    assert FailureLimiter(1, 1.0).max_addresses == 10_000
    args = cli._resolve(cli.build_parser().parse_args(["relay", "--listen", ":0"]), "relay")
    for key, value in dataclasses.asdict(options).items():
        if hasattr(args, key) and key != "port":
            assert getattr(args, key) == value, key
    agent = cli._resolve(
        cli.build_parser().parse_args(["agent", "--relay", "h:1", "--service", "a=h:2"]), "agent"
    )
    assert agent.idle_timeout == 0  # agents and forwarders: off unless asked for


# ============================================================================ handshake
async def test_deeply_nested_auth_is_answered_and_closed_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_relay(auth_timeout=30) as relay:
        session = await mio.connect(HOST, relay.port())
        control = await session.open_stream()
        assert (await read_message(control))["type"] == "challenge"
        control.write(raw_message(b'{"type":"auth","x":' + b"[" * 8000 + b"]" * 8000 + b"}"))
        reply = await asyncio.wait_for(read_message(control), 5)
        assert reply["type"] == "error"
        assert reply["code"] == "protocol"
        assert "deeper than" in reply["error"]
        await asyncio.wait_for(session.wait_closed(), 5)  # long before the auth timeout
        assert relay.counts["auth_failures"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "RecursionError" not in caplog.text


async def test_an_agent_registers_at_most_256_services() -> None:
    assert auth.MAX_SERVICES == 256
    for count, ok in ((256, True), (257, False)):
        client, server = mio.pipe()
        async with client, server:
            dialer = await client.open_stream()
            relay_stream = await server.accept_stream()
            names = [f"s{i}" for i in range(count)]
            results = await asyncio.gather(
                auth.relay_handshake(relay_stream, KEY, timeout=5),
                auth.dialer_handshake(
                    dialer, KEY, role="agent", name="n", services=names, timeout=5
                ),
                return_exceptions=True,
            )
        if ok:
            assert isinstance(results[0], auth.Hello)
            assert len(results[0].services) == 256
        else:
            assert isinstance(results[0], TunnelProtocolError)
            assert "more than 256 services" in str(results[0])
            assert isinstance(results[1], TunnelProtocolError)  # told why


async def _wrong_proof(port: int) -> dict[str, Any]:
    session = await mio.connect(HOST, port)
    try:
        control = await session.open_stream()
        with contextlib.suppress(auth.AuthFailed):
            await auth.dialer_handshake(control, b"not the secret!!", role="agent", name="x")
            pytest.fail("a wrong secret was accepted")
        await asyncio.wait_for(session.wait_closed(), 5)
        return {"closed": True}
    finally:
        session.close()


async def test_failed_authentications_are_rate_limited_per_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "mio.tunnel.relay"):
        async with running_relay(auth_failures=3, auth_failure_window=60) as relay:
            for _ in range(3):
                await _wrong_proof(relay.port())
            # The fourth connection from 127.0.0.1 is reset before any challenge ...
            reader, writer = await asyncio.open_connection(HOST, relay.port())
            await assert_reset(reader)
            writer.close()
            for _ in range(5):
                reader, writer = await asyncio.open_connection(HOST, relay.port())
                await assert_reset(reader)
                writer.close()
            assert relay.counts["refused_auth_rate"] == 6
            # ... while another source address still gets a challenge.
            session = await mio.connect(HOST, relay.port(), local_addr=("127.0.0.2", 0))
            control = await session.open_stream()
            assert (await asyncio.wait_for(read_message(control), 5))["type"] == "challenge"
            session.close()
            assert relay.counts["auth_failures"] == 3
    failures = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(failures) == 1  # then summaries: one line per interval
    assert "2 more failed authentications in the last 10 s" in caplog.text


# ============================================================================ admission
@pytest.mark.timeout(30)
async def test_pending_connections_are_capped(tmp_path: Path) -> None:
    cert, key, _ = tls_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with running_relay(
        ssl=context, auth_timeout=30, max_pending=4, max_pending_per_source=3
    ) as relay:
        silent = [await asyncio.open_connection(HOST, relay.port()) for _ in range(3)]
        await eventually(lambda: relay.stats()["pending"] == 3)
        # Per source: the fourth from 127.0.0.1 is reset at once, no TLS state made.
        reader, writer = await asyncio.open_connection(HOST, relay.port())
        await assert_reset(reader)
        writer.close()
        other = [await asyncio.open_connection(HOST, relay.port(), local_addr=("127.0.0.2", 0))]
        await eventually(lambda: relay.stats()["pending"] == 4)
        # In total: the fifth is reset whatever its address.
        reader, writer = await asyncio.open_connection(
            HOST, relay.port(), local_addr=("127.0.0.3", 0)
        )
        await assert_reset(reader)
        writer.close()
        assert relay.counts["refused_pending"] == 2
        for _, w in silent + other:
            w.close()
        await eventually(lambda: relay.stats()["pending"] == 0)
        # Failed TLS handshakes leave nothing behind (memory stays bounded).
        for _ in range(20):
            reader, writer = await asyncio.open_connection(HOST, relay.port())
            writer.write(b"\x16\x03\x01\x00\x05hello")  # a TLS record header, then junk
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
        await eventually(lambda: relay.stats()["pending"] == 0)
        assert not relay._peers


def _spy_timeouts(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, caller: str
) -> list[float]:
    """Record the ``timeout=`` of every call to ``owner.name`` made from file ``caller``."""
    import sys as _sys

    real = getattr(owner, name)
    seen: list[float] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        if _sys._getframe(1).f_code.co_filename.endswith(caller) and "timeout" in kwargs:
            seen.append(kwargs["timeout"])
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return seen


@pytest.mark.timeout(30)
async def test_one_deadline_covers_tls_and_authentication(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that is slow to start TLS gets what remains of ``auth_timeout`` for the
    rest, not a second full timeout."""
    cert, key, _ = tls_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    budgets = _spy_timeouts(monkeypatch, asyncio, "wait", "relay.py")
    async with running_relay(ssl=context, auth_timeout=2.0) as relay:
        sock = socket.create_connection((HOST, relay.port()))
        sock.setblocking(False)
        await asyncio.sleep(1.6)  # connected, silent
        _, session = await loop.create_connection(
            lambda: mio.Session(client=True), sock=sock, ssl=client_ctx, server_hostname=HOST
        )
        control = await session.open_stream()  # TLS done; now never authenticate
        with contextlib.suppress(TunnelProtocolError):
            await read_message(control)
        await asyncio.wait_for(session.wait_closed(), 10)
        # The wait for authentication got what was left of the one deadline: at most
        # 2.0 - 1.6 s (less on a slow machine, never more); a second timer would give 2.0 s.
        assert budgets, "the relay never waited for authentication"
        assert max(budgets) <= 0.4 + 0.05, budgets
        assert relay.stats()["pending"] == 0


@pytest.mark.timeout(30)
async def test_the_dialer_has_one_deadline_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent whose relay is slow to answer TLS gets what remains of ``auth_timeout``
    for the handshake, not a second full timeout."""
    cert, key, _ = tls_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    listener = socket.create_server((HOST, 0))
    listener.setblocking(False)
    sessions: list[mio.Session] = []

    async def slow_relay() -> None:
        sock, _ = await loop.sock_accept(listener)
        await asyncio.sleep(1.5)  # the ClientHello waits in the socket
        _, session = await loop.connect_accepted_socket(
            lambda: mio.Session(client=False), sock, ssl=context
        )
        sessions.append(session)  # and then never says a word

    relay = asyncio.ensure_future(slow_relay())
    link = Link(
        LinkOptions(
            host=HOST, port=listener.getsockname()[1], secret=KEY, role="agent",
            name="a", ssl=_client_context(), auth_timeout=2.0,
        )
    )  # fmt: skip
    budgets = _spy_timeouts(monkeypatch, link_module, "dialer_handshake", "link.py")
    with pytest.raises(auth.AuthTimeout):
        await link._connect()
    # the handshake got what was left after 1.5 s of TLS: at most 0.5 s (less on a slow
    # machine, never more); a second timer would give it the full 2.0 s
    assert budgets, "the dialer never reached the handshake"
    assert max(budgets) <= 0.5 + 0.05, budgets
    await relay
    for session in sessions:
        session.close()
        await session.wait_closed()
    listener.close()


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def test_public_port_and_source_limits() -> None:
    async with (
        service(echo) as echo_addr,
        running_relay(
            publics=[("echo", HOST, 0)], max_port_connections=3, max_source_connections=2
        ) as relay,
        running_agent(relay, {"echo": hostport(echo_addr)}),
    ):
        port = relay.port("echo")
        held = [await ping(port), await ping(port)]
        reader, writer = await asyncio.open_connection(HOST, port)
        await assert_reset(reader)  # a third from 127.0.0.1
        writer.close()
        assert relay.counts["refused_source_limit"] == 1
        held.append(await ping(port, local="127.0.0.2"))  # another source: fine
        reader, writer = await asyncio.open_connection(HOST, port, local_addr=("127.0.0.3", 0))
        await assert_reset(reader)  # the port is full
        writer.close()
        assert relay.counts["refused_port_limit"] == 1
        held.pop(0)[1].close()
        await eventually(lambda: relay.stats()["active"] == 2)
        await roundtrip(port, 4096)  # a freed slot is usable at once
        for _, w in held:
            w.close()


@pytest.mark.timeout(30)
async def test_a_trickle_does_not_defeat_the_idle_timeout() -> None:
    async def trickle(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
        while not stop.is_set():
            writer.write(b".")
            await asyncio.sleep(0.05)

    async with service(echo) as echo_addr:
        async with (
            running_relay(
                publics=[("echo", HOST, 0)], idle_timeout=0.5, idle_min_bytes=64
            ) as relay,
            running_agent(relay, {"echo": hostport(echo_addr)}),
        ):
            reader, writer = await ping(relay.port("echo"))
            stop = asyncio.Event()
            task = asyncio.ensure_future(trickle(writer, stop))
            # ~10 bytes per 0.5 s: under 64, so reset although data keeps moving.
            with pytest.raises(ConnectionResetError):
                await read_all(reader)
            stop.set()
            with contextlib.suppress(ConnectionError):
                await task
            writer.close()

        # The same trickle with a minimum of 1 byte (what an idle timeout alone checks)
        # keeps the connection open: the minimum is what stops it.
        async with (
            running_relay(publics=[("echo", HOST, 0)], idle_timeout=0.5, idle_min_bytes=1) as relay,
            running_agent(relay, {"echo": hostport(echo_addr)}),
        ):
            reader, writer = await ping(relay.port("echo"))
            stop = asyncio.Event()
            task = asyncio.ensure_future(trickle(writer, stop))
            received = 0
            loop = asyncio.get_running_loop()
            end = loop.time() + 2.0
            while loop.time() < end:
                received += len(await asyncio.wait_for(reader.read(1024), 5))
            stop.set()
            await task
            assert received >= 10
            writer.close()


# ============================================================================ agents
@posix
@pytest.mark.timeout(40)
async def test_several_agents_share_a_name(tunnel: Tunnel) -> None:
    def named(tag: bytes) -> Any:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(tag)
            writer.write_eof()
            await reader.read()

        return handler

    async def who(port: int) -> bytes:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        return data

    async with service(named(b"A")) as a_addr, service(named(b"B")) as b_addr:
        relay = await tunnel.relay("relay", "--public", f"web={HOST}:0")
        agent_a = await tunnel.agent(relay, "--service", f"web={a_addr}", name="agent-a")
        agent_b = await tunnel.agent(relay, "--service", f"web={b_addr}", name="agent-b")
        await relay.wait_log("joins 1 other agent(s) serving 'web'")
        port = await relay.port("public web on")
        seen = [await who(port) for _ in range(6)]
        assert sorted(seen) == [b"A"] * 3 + [b"B"] * 3  # round-robin over both
        assert seen[0] != seen[1]
        # The newest leaves: the older one keeps serving the name.
        agent_b.kill()
        await relay.wait_log("1 agent(s) still serve 'web'")
        assert [await who(port) for _ in range(4)] == [b"A"] * 4
        # And the other way round with a fresh agent.
        await tunnel.agent(relay, "--service", f"web={b_addr}", name="agent-b2")
        assert await agent_a.stop() == 0
        await eventually(lambda: relay.log.count("still serve 'web'") == 2)
        assert [await who(port) for _ in range(3)] == [b"B"] * 3
        assert "no agent serves" not in relay.log


# ============================================================================ errors
def run_cli(*args: str, tmp_path: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, auth.SECRET_ENV: SECRET}
    return subprocess.run(
        [*TUNNEL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=tmp_path,
    )


@posix
@pytest.mark.timeout(60)
def test_file_errors_name_the_option_and_the_file(tmp_path: Path) -> None:
    cert, key, _ = tls_files(tmp_path)
    listen = ["relay", "--listen", f"{HOST}:0"]
    cases = [
        ([*listen, "--tls-cert", "nope.crt"], "--tls-cert nope.crt: cannot read it"),
        ([*listen, "--tls-cert", cert], f"--tls-cert {cert} holds no private key: give"),
        ([*listen, "--tls-cert", cert, "--tls-key", "nope.key"], "--tls-key nope.key"),
        ([*listen, "--tls-cert", cert, "--tls-key", cert], f"--tls-key {cert}: no PEM"),
        ([*listen, "--tls-cert", key, "--tls-key", key], f"--tls-cert {key}: no PEM cert"),
        (
            ["agent", "--relay", "h:1", "--service", "a=h:2", "--tls-ca", "nope.pem"],
            "--tls-ca nope.pem: cannot read it",
        ),
        ([*listen, "--secret-file", "missing.secret"], "--secret-file missing.secret"),
    ]
    for args, expected in cases:
        done = run_cli(*args, tmp_path=tmp_path)
        assert done.returncode == cli.EXIT_USAGE, (args, done.stderr)
        assert expected in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert "PEM lib" not in done.stderr
    secret = tmp_path / "open.secret"
    secret.write_text("0123456789abcdef0123\n")
    secret.chmod(0o644)
    done = run_cli(*listen, "--secret-file", str(secret), tmp_path=tmp_path)
    assert done.returncode == cli.EXIT_USAGE
    assert "accessible by group or others" in done.stderr
    assert "--insecure-secret-file" in done.stderr


@posix
@pytest.mark.timeout(30)
def test_a_busy_port_fails_before_any_readiness_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args, culprit in (
            (["--listen", f"{HOST}:{port}"], f"--listen {HOST}:{port}: cannot listen"),
            (
                ["--listen", f"{HOST}:0", "--public", f"web={HOST}:{port}"],
                f"--public web {HOST}:{port}: cannot listen",
            ),
        ):
            done = run_cli("relay", *args, tmp_path=tmp_path)
            assert done.returncode == cli.EXIT_ERROR, done.stderr
            assert culprit in done.stderr, done.stderr
            assert done.stdout == ""  # no "relay listening on" before the failure
        # With TLS too: not even the fingerprint line comes first.
        cert, key, _ = tls_files(tmp_path)
        tls = ["--tls-cert", cert, "--tls-key", key]
        for args, culprit in (
            (["--listen", f"{HOST}:0", "--public", f"web={HOST}:{port}", *tls], "--public web"),
            (["--listen", f"{HOST}:0", "--metrics", str(port), *tls], f"--metrics {HOST}:{port}"),
        ):
            done = run_cli("relay", *args, tmp_path=tmp_path)
            assert done.returncode == cli.EXIT_ERROR, done.stderr
            assert f"{culprit}" in done.stderr, done.stderr
            assert "cannot listen" in done.stderr
            assert done.stdout == ""
        done = run_cli(
            "agent", "--relay", f"{HOST}:1", "--service", "a=h:2", "--metrics", str(port),
            tmp_path=tmp_path,
        )  # fmt: skip
        assert done.returncode == cli.EXIT_ERROR
        assert f"--metrics {HOST}:{port}: cannot listen" in done.stderr
        done = run_cli(
            "forward", "--listen", f"{HOST}:{port}", "--relay", f"{HOST}:1", "--to", "x",
            tmp_path=tmp_path,
        )  # fmt: skip
        assert done.returncode == cli.EXIT_ERROR
        assert f"--listen {HOST}:{port}: cannot listen" in done.stderr


@posix
@pytest.mark.timeout(30)
async def test_tls_agent_against_a_plain_relay_is_told_so(tunnel: Tunnel, tmp_path: Path) -> None:
    tls_files(tmp_path)
    relay = await tunnel.relay("relay")
    agent = tunnel.start(
        "agent", "agent", "--relay", f"{HOST}:{await relay.port('relay listening on')}",
        "--service", "a=127.0.0.1:1", "--tls-ca", str(tmp_path / "ca.pem"),
        "--backoff-initial", "0.1", "--backoff-max", "0.2",
    )  # fmt: skip
    await agent.wait_log("the relay does not speak TLS", timeout=15)
    await agent.wait_log("retrying in")
    await relay.wait_log("speaks TLS but this relay is plain TCP")
