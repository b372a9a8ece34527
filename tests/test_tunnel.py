"""``mio tunnel``: unit tests of its parts, and real relay/agent/forward processes on 127.0.0.1.

The process tests start the commands with ``python -m mio.tunnel.cli`` (see :data:`TUNNEL`)
and wait for their readiness lines on stdout; the tunneled services are asyncio servers in
the test process. Every process is killed at teardown if a test left it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tunnel_util import (
    DIALER_OPTS,
    HOST,
    SECRET,
    WRONG_SECRET,
    Tunnel,
    assert_closed,
    echo,
    free_port,
    ping,
    posix,
    refused,
    roundtrip,
    service,
    tls_files,
)
from tunnel_util import tunnel as tunnel  # the fixture

import mio
from mio.tunnel import auth, cli, tls
from mio.tunnel.addr import format_address, parse_hostport, parse_named
from mio.tunnel.link import Backoff
from mio.tunnel.protocol import TunnelProtocolError, read_message, write_message


# ============================================================================ unit tests
def test_addresses() -> None:
    assert parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_hostport("[::1]:7000") == ("::1", 7000)
    assert parse_hostport(":8080", listen=True) == (None, 8080)
    assert parse_hostport("localhost:0", listen=True) == ("localhost", 0)
    assert parse_named("web=127.0.0.1:80") == ("web", "127.0.0.1", 80)
    for bad in ("nohost", ":80", "h:0", "h:70000", "::1:80", "h:x"):
        with pytest.raises(ValueError, match=r"HOST:PORT|host|port|IPv6"):
            parse_hostport(bad)
    for bad in ("web127.0.0.1:80", "=h:1", "bad name=h:1", "x/y=h:1"):
        with pytest.raises(ValueError, match=r"NAME=HOST:PORT|service name"):
            parse_named(bad)
    assert format_address(("::1", 5, 0, 0)) == "[::1]:5"
    assert format_address(("10.0.0.1", 5)) == "10.0.0.1:5"


def test_fingerprints() -> None:
    digest = bytes(range(32))
    assert tls.parse_fingerprint(tls.format_fingerprint(digest)) == digest
    assert tls.parse_fingerprint(":".join(f"{b:02X}" for b in digest)) == digest
    with pytest.raises(ValueError, match="SHA-256"):
        tls.parse_fingerprint("sha256:abcd")


def test_backoff_is_exponential_capped_and_jittered() -> None:
    low = Backoff(0.5, 4.0, rng=lambda: 0.0)
    assert [low.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    high = Backoff(0.5, 4.0, rng=lambda: 0.999999)
    delays = [high.next_delay() for _ in range(6)]
    assert delays[-1] == pytest.approx(4.0)
    assert delays[0] == pytest.approx(0.5)
    high.reset()
    assert high.next_delay() == pytest.approx(0.5)


def test_load_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("  0123456789abcdef0123\n")
    path.chmod(0o600)
    assert auth.load_secret(str(path), {}) == b"0123456789abcdef0123"
    assert auth.load_secret(None, {auth.SECRET_ENV: "from-the-environment"}) == (
        b"from-the-environment"
    )
    assert auth.load_secret(str(path), {auth.SECRET_ENV: "ignored"}) == b"0123456789abcdef0123"
    with pytest.raises(ValueError, match="no shared secret"):
        auth.load_secret(None, {})
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(ValueError, match="empty"):
        auth.load_secret(str(tmp_path / "empty"), {})
    with pytest.raises(ValueError, match="cannot read"):
        auth.load_secret(str(tmp_path / "missing"), {})


async def _handshake(
    relay_secret: bytes,
    dialer_secret: bytes,
    *,
    relay_binding: bytes = b"",
    dialer_binding: bytes = b"",
    role: str = "agent",
) -> tuple[object, object]:
    """Run both sides over an in-memory session; return (relay result, dialer result),
    each the value or the exception."""
    client, server = mio.pipe()
    async with client, server:
        dialer_stream = await client.open_stream()
        relay_stream = await server.accept_stream()
        results = await asyncio.gather(
            auth.relay_handshake(relay_stream, relay_secret, binding=relay_binding, timeout=5),
            auth.dialer_handshake(
                dialer_stream,
                dialer_secret,
                role=role,
                name="test",
                services=["web", "db"],
                binding=lambda kind: dialer_binding,
                timeout=5,
            ),
            return_exceptions=True,
        )
    return results[0], results[1]


async def test_auth_good_secret() -> None:
    hello, welcome = await _handshake(b"s" * 32, b"s" * 32)
    assert hello == auth.Hello("agent", "test", ("web", "db"))
    assert isinstance(welcome, auth.Welcome)
    assert welcome.binding == auth.BINDING_NONE
    hello, _ = await _handshake(b"k" * 32, b"k" * 32, role="forward")
    assert isinstance(hello, auth.Hello)
    assert hello.role == "forward"
    assert hello.services == ()


async def test_auth_wrong_secret_fails_on_both_sides() -> None:
    hello, welcome = await _handshake(b"SecretOfTheRelay", b"SecretOfTheAgent")
    assert isinstance(hello, auth.AuthFailed)
    assert isinstance(welcome, auth.AuthFailed)
    for text in (str(hello), str(welcome)):
        assert "SecretOf" not in text


async def test_auth_is_bound_to_the_relay_certificate() -> None:
    cert = hashlib.sha256(b"relay certificate").digest()
    hello, welcome = await _handshake(b"s" * 32, b"s" * 32, relay_binding=cert, dialer_binding=cert)
    assert isinstance(hello, auth.Hello)
    assert isinstance(welcome, auth.Welcome)
    assert welcome.binding == auth.BINDING_CERT
    # A man in the middle terminates TLS with another certificate: the proofs do not match.
    other = hashlib.sha256(b"another certificate").digest()
    hello, welcome = await _handshake(
        b"s" * 32, b"s" * 32, relay_binding=cert, dialer_binding=other
    )
    assert isinstance(hello, auth.AuthFailed)
    assert isinstance(welcome, auth.AuthFailed)


async def test_auth_the_relay_must_prove_the_secret_too() -> None:
    """A fake relay that accepts any proof is caught by the dialer (mutual authentication)."""
    client, server = mio.pipe()
    async with client, server:
        dialer_stream = await client.open_stream()
        fake_stream = await server.accept_stream()

        async def fake_relay() -> None:
            write_message(
                fake_stream,
                {"type": "challenge", "version": 1, "nonce": "00" * 32, "binding": "none"},
            )
            await read_message(fake_stream, "auth")
            write_message(fake_stream, {"type": "welcome", "proof": "11" * 32})

        fake = asyncio.ensure_future(fake_relay())
        with pytest.raises(auth.AuthFailed, match="could not prove"):
            await auth.dialer_handshake(dialer_stream, b"s" * 32, role="agent", name="n", timeout=5)
        await fake


async def test_auth_timeout_and_malformed_messages() -> None:
    client, server = mio.pipe()
    async with client, server:
        silent = await client.open_stream()
        relay_stream = await server.accept_stream()
        with pytest.raises(auth.AuthTimeout):
            await auth.relay_handshake(relay_stream, b"s" * 32, timeout=0.2)
        # The relay's challenge arrived; the dialer never answered.
        assert (await read_message(silent))["type"] == "challenge"

        bad = await client.open_stream()
        relay_stream = await server.accept_stream()
        bad.write(b"\x00\x05hello")
        with pytest.raises(TunnelProtocolError):
            await auth.relay_handshake(relay_stream, b"s" * 32, timeout=5)


def test_help_is_complete(capsys: pytest.CaptureFixture[str]) -> None:
    expected = {
        "relay": ["--listen", "--public", "--tls-cert", "--tls-key", "--max-connections",
                  "--auth-timeout", "--idle-timeout", "--grace", "--secret-file",
                  "MIO_TUNNEL_SECRET", "relay listening on", "exit status"],
        "agent": ["--relay", "--service", "--tls-ca", "--tls-fingerprint", "--connect-timeout",
                  "--backoff-max", "agent connected to", "example"],
        "forward": ["--listen", "--relay", "--to", "--tls-fingerprint", "forward listening on"],
    }  # fmt: skip
    for command, needles in expected.items():
        with pytest.raises(SystemExit) as info:
            cli.main([command, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        for needle in needles:
            assert needle in text, (command, needle)
    # The parser the top-level ``mio`` command uses.
    import argparse

    top = argparse.ArgumentParser(prog="mio")
    cli.add_parser(top.add_subparsers(dest="command"))
    args = top.parse_args(["tunnel", "agent", "--relay", "h:1", "--service", "a=h:2"])
    assert args.func is cli.run_agent
    with pytest.raises(SystemExit):
        top.parse_args(["tunnel", "relay", "--listen", "h:1", "--secret", "x"])
    capsys.readouterr()


# ============================================================================ processes
def test_the_mio_command_has_the_tunnel_commands() -> None:
    """``mio tunnel ...`` (the top-level command line) reaches these same commands."""
    import mio.cli  # an ImportError here fails the test: the tunnel is part of mio

    assert mio.cli.tunnel_cli is cli
    for command in ("relay", "agent", "forward"):
        done = subprocess.run(
            [sys.executable, "-m", "mio", "tunnel", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"mio tunnel {command}" in done.stdout
        assert "--secret-file" in done.stdout


# ============================================================================ process tests
@posix
@pytest.mark.timeout(30)
async def test_many_concurrent_connections_keep_data_intact(tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--public", f"echo={HOST}:0")
        await tunnel.agent(relay, "--service", f"echo={echo_addr}")
        port = await relay.port("public echo on")
        await asyncio.gather(*(roundtrip(port, 1024 * 1024) for _ in range(20)))
    assert SECRET not in relay.log


@posix
@pytest.mark.timeout(30)
async def test_relay_and_agent_run_on_uvloop(tunnel: Tunnel) -> None:
    pytest.importorskip("uvloop")
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--public", f"echo={HOST}:0", "--loop", "uvloop")
        agent = await tunnel.agent(relay, "--service", f"echo={echo_addr}", "--loop", "uvloop")
        port = await relay.port("public echo on")
        await asyncio.gather(*(roundtrip(port, 256 * 1024) for _ in range(4)))
    for proc in (relay, agent):  # the processes really run uvloop's loop
        assert proc.popen.poll() is None
        assert "event loop: uvloop.Loop" in proc.log


@posix
@pytest.mark.timeout(30)
async def test_relay_and_agent_run_on_asyncio_when_asked(tunnel: Tunnel) -> None:
    # The default (--loop auto) is uvloop where it is installed, so most process tests here
    # run uvloop; this one keeps asyncio's own loop covered end to end.
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--public", f"echo={HOST}:0", "--loop", "asyncio")
        agent = await tunnel.agent(relay, "--service", f"echo={echo_addr}", "--loop", "asyncio")
        port = await relay.port("public echo on")
        await asyncio.gather(*(roundtrip(port, 256 * 1024) for _ in range(4)))
    for proc in (relay, agent):
        assert proc.popen.poll() is None
        assert "event loop: asyncio.unix_events." in proc.log


@posix
@pytest.mark.timeout(30)
async def test_relay_and_agent_default_to_uvloop_where_installed(tunnel: Tunnel) -> None:
    import importlib.util

    expect = "uvloop.Loop" if importlib.util.find_spec("uvloop") else "asyncio.unix_events."
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--public", f"echo={HOST}:0")
        agent = await tunnel.agent(relay, "--service", f"echo={echo_addr}")
        port = await relay.port("public echo on")
        await roundtrip(port, 64 * 1024)
    for proc in (relay, agent):
        assert f"event loop: {expect}" in proc.log


#: Tunneled connections open at once in the test below (docs/TUNNEL.md cites it).
CONCURRENT = 300


@posix
@pytest.mark.timeout(90)
async def test_hundreds_of_concurrent_connections_share_one_session(tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr:
        relay = await tunnel.relay(
            "relay", "--public", f"echo={HOST}:0",
            "--max-connections", "1000", "--max-source-connections", "1000",
        )  # fmt: skip
        agent = await tunnel.agent(relay, "--service", f"echo={echo_addr}")
        port = await relay.port("public echo on")
        opening = asyncio.Semaphore(32)  # under the listen backlog

        async def open_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with opening:
                return await ping(port)

        conns = await asyncio.gather(*(open_one() for _ in range(CONCURRENT)))
        # All of them are tunneled and open now; each finishes with its own payload.

        async def finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            payload = os.urandom(16 * 1024)
            writer.write(payload)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 30) == payload
            writer.close()

        await asyncio.gather(*(finish(r, w) for r, w in conns))
        assert len([x for x in agent.lines() if x.startswith("agent connected")]) == 1
        assert agent.log.count("-> 'echo' (") == CONCURRENT  # over the one session


@posix
@pytest.mark.timeout(60)
async def test_dead_link_is_detected_after_three_silent_keepalive_intervals(
    tunnel: Tunnel,
) -> None:
    """TUNNEL.md: "3x silence = dead link", on both sides (SIGSTOP freezes a process
    without closing its sockets, as a dead host or a cut cable would)."""
    loop = asyncio.get_running_loop()
    dead = "idle timeout: no data from the peer for 1.5 s"
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--public", f"echo={HOST}:0", "--keepalive", "0.5")
        agent = await tunnel.agent(relay, "--service", f"echo={echo_addr}", "--keepalive", "0.5")
        port = await relay.port("public echo on")
        await roundtrip(port, 4096)
        await asyncio.sleep(2.0)  # idle but alive: keepalives keep the link up
        assert dead not in agent.log + relay.log

        relay.popen.send_signal(signal.SIGSTOP)  # the relay goes silent
        start = loop.time()
        try:
            await agent.wait_log(dead, timeout=15)
            silent = loop.time() - start
        finally:
            relay.popen.send_signal(signal.SIGCONT)
        assert silent >= 1.0  # three intervals of 0.5 s, not one
        await agent.line("agent connected to", count=2, timeout=20)
        await roundtrip(port, 4096)

        seen = relay.log.count(dead)  # the relay saw the first link die too, once resumed
        agent.popen.send_signal(signal.SIGSTOP)  # now the agent goes silent
        start = loop.time()
        try:
            while relay.log.count(dead) == seen:
                assert loop.time() - start < 15, "the relay did not drop the silent agent"
                await asyncio.sleep(0.02)
            silent = loop.time() - start
            await assert_closed(port)  # the relay forgot the dead agent's service
        finally:
            agent.popen.send_signal(signal.SIGCONT)
        assert silent >= 1.0
        await agent.line("agent connected to", count=3, timeout=20)
        await roundtrip(port, 4096)


@posix
@pytest.mark.timeout(20)
async def test_half_close_travels_both_ways(tunnel: Tunnel) -> None:
    seen: dict[str, bytes] = {}
    after: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def request_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Nothing is answered before the client's half-close has arrived as EOF.
        seen["request"] = await reader.read()
        writer.write(b"reply to " + seen["request"])
        writer.write_eof()

    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The service half-closes first and keeps reading until the client's EOF.
        writer.write(b"hello, then EOF")
        writer.write_eof()
        after.set_result(await reader.read())

    async with service(request_reply) as rr_addr, service(greeter) as greet_addr:
        relay = await tunnel.relay(
            "relay", "--public", f"rr={HOST}:0", "--public", f"greet={HOST}:0"
        )
        await tunnel.agent(relay, "--service", f"rr={rr_addr}", "--service", f"greet={greet_addr}")

        reader, writer = await asyncio.open_connection(HOST, await relay.port("public rr on"))
        writer.write(b"question")
        writer.write_eof()  # shutdown(SHUT_WR)
        assert await asyncio.wait_for(reader.read(), 5) == b"reply to question"
        assert reader.at_eof()
        writer.close()
        assert seen["request"] == b"question"

        reader, writer = await asyncio.open_connection(HOST, await relay.port("public greet on"))
        assert await asyncio.wait_for(reader.read(), 5) == b"hello, then EOF"
        writer.write(b"still talking after your EOF")
        await writer.drain()
        writer.write_eof()
        assert await asyncio.wait_for(after, 5) == b"still talking after your EOF"
        writer.close()


@posix
@pytest.mark.timeout(20)
async def test_wrong_secret_is_refused(tunnel: Tunnel, tmp_path: Path) -> None:
    secret_file = tmp_path / "wrong.secret"
    secret_file.write_text(WRONG_SECRET + "\n")
    secret_file.chmod(0o600)
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--public", f"echo={HOST}:0")
        port = await relay.port("relay listening on")
        agent = tunnel.start(
            "agent",
            "agent",
            "--relay",
            f"{HOST}:{port}",
            "--service",
            f"echo={echo_addr}",
            "--secret-file",
            str(secret_file),
            *DIALER_OPTS,
        )
        assert await agent.wait() == cli.EXIT_AUTH
        assert "authentication with the relay" in agent.log
        assert "failed" in agent.log
        await relay.wait_log("authentication failed")
        await assert_closed(await relay.port("public echo on"))
    for log in (relay.log, agent.log):
        assert SECRET not in log
        assert WRONG_SECRET not in log
    assert "agent connected" not in "".join(agent.lines())


@posix
@pytest.mark.timeout(20)
async def test_relay_drops_peers_that_do_not_authenticate(tunnel: Tunnel) -> None:
    relay = await tunnel.relay("relay", "--auth-timeout", "0.5")
    port = await relay.port("relay listening on")
    # A bare TCP connection that never speaks, and a mio session that never authenticates
    # but tries to open streams.
    reader, writer = await asyncio.open_connection(HOST, port)
    session = await mio.connect(HOST, port)
    control = await session.open_stream()
    assert (await read_message(control))["type"] == "challenge"
    extra = await session.open_stream()
    extra.write(b"let me in")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(extra.read(), 5)  # refused: not authenticated
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ConnectionResetError):  # a silent TCP connection is reset
        await asyncio.wait_for(reader.read(), 5)
    await asyncio.wait_for(session.wait_closed(), 5)
    assert 0.3 < loop.time() - start < 3
    writer.close()
    assert relay.log.count("no authentication within 0.5 s") == 2


@posix
@pytest.mark.timeout(25)
async def test_agent_reconnects_after_the_relay_restarts(tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay1", "--public", f"echo={HOST}:0")
        agent = await tunnel.agent(relay, "--service", f"echo={echo_addr}")
        await roundtrip(await relay.port("public echo on"), 64 * 1024)
        listen_port = await relay.port("relay listening on")
        assert await relay.stop() == 0

        relay2 = await tunnel.relay(
            "relay2", "--public", f"echo={HOST}:0", listen=f"{HOST}:{listen_port}"
        )
        await agent.line("agent connected to", count=2, timeout=10)
        await roundtrip(await relay2.port("public echo on"), 64 * 1024)
        assert "reconnecting" in agent.log


@posix
@pytest.mark.timeout(20)
async def test_service_down_closes_the_client_and_the_tunnel_stays_up(tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr:
        relay = await tunnel.relay(
            "relay", "--public", f"down={HOST}:0", "--public", f"echo={HOST}:0"
        )
        agent = await tunnel.agent(
            relay, "--service", f"down={HOST}:{free_port()}", "--service", f"echo={echo_addr}"
        )
        await assert_closed(await relay.port("public down on"))
        await roundtrip(await relay.port("public echo on"), 256 * 1024)
        await assert_closed(await relay.port("public down on"))
        await roundtrip(await relay.port("public echo on"), 256 * 1024)
        assert len([x for x in agent.lines() if x.startswith("agent connected")]) == 1
        assert "cannot connect" in agent.log
        assert "cannot connect" in relay.log


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="relies on Linux dropping SYNs to a full backlog"
)
@pytest.mark.timeout(20)
async def test_connect_timeout_to_the_service(tunnel: Tunnel) -> None:
    # A listener whose accept queue is full: the kernel drops new SYNs, connect() hangs.
    with socket.socket() as full:
        full.bind((HOST, 0))
        full.listen(0)
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(full.getsockname())
            fillers.append(filler)
        try:
            async with service(echo) as echo_addr:
                hang = f"{HOST}:{full.getsockname()[1]}"
                relay = await tunnel.relay(
                    "relay", "--public", f"hang={HOST}:0", "--public", f"echo={HOST}:0"
                )
                agent = await tunnel.agent(
                    relay, "--service", f"hang={hang}", "--service", f"echo={echo_addr}",
                    "--connect-timeout", "0.5",
                )  # fmt: skip
                loop = asyncio.get_running_loop()
                start = loop.time()
                await assert_closed(await relay.port("public hang on"))
                assert loop.time() - start < 4
                await roundtrip(await relay.port("public echo on"), 64 * 1024)
                assert "timed out connecting" in agent.log
        finally:
            for filler in fillers:
                filler.close()


@posix
@pytest.mark.timeout(20)
async def test_tls_link_with_a_ca(tunnel: Tunnel, tmp_path: Path) -> None:
    cert, key, ca = tls_files(tmp_path)
    async with service(echo) as echo_addr:
        relay = await tunnel.relay(
            "relay", "--public", f"echo={HOST}:0", "--tls-cert", cert, "--tls-key", key
        )
        await tunnel.agent(relay, "--service", f"echo={echo_addr}", tls_args=("--tls-ca", ca))
        port = await relay.port("public echo on")
        await asyncio.gather(*(roundtrip(port, 256 * 1024) for _ in range(4)))
        # A plain-TCP agent cannot talk to a TLS relay.
        plain = tunnel.start(
            "plain", "agent", "--relay", f"{HOST}:{await relay.port('relay listening on')}",
            "--service", f"echo={echo_addr}", "--auth-timeout", "1", *DIALER_OPTS,
        )  # fmt: skip
        # ... and both sides say so in one line; the agent does not retry.
        assert await plain.wait() == cli.EXIT_USAGE
        assert "the relay speaks TLS: add --tls-ca or --tls-fingerprint" in plain.log
        assert "cannot connect" not in plain.log
        await relay.wait_log("speaks plain TCP but this relay speaks TLS")
        assert not plain.lines()


@posix
@pytest.mark.timeout(20)
async def test_tls_fingerprint_pinning(tunnel: Tunnel, tmp_path: Path) -> None:
    cert, key, _ = tls_files(tmp_path)
    async with service(echo) as echo_addr:
        relay = await tunnel.relay(
            "relay", "--public", f"echo={HOST}:0", "--tls-cert", cert, "--tls-key", key
        )
        fingerprint = (await relay.line("relay tls-fingerprint")).split()[-1]
        assert tls.parse_fingerprint(fingerprint) == tls.certificate_digest(cert)
        await tunnel.agent(
            relay, "--service", f"echo={echo_addr}", tls_args=("--tls-fingerprint", fingerprint)
        )
        await roundtrip(await relay.port("public echo on"), 256 * 1024)

        wrong = tunnel.start(
            "wrong-pin", "agent", "--relay", f"{HOST}:{await relay.port('relay listening on')}",
            "--service", "other=127.0.0.1:1", "--tls-fingerprint", "ab" * 32, *DIALER_OPTS,
        )  # fmt: skip
        assert await wrong.wait() == cli.EXIT_AUTH
        assert "does not match the pinned" in wrong.log


@posix
@pytest.mark.timeout(25)
async def test_forward_reaches_a_private_service(tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay")  # no public port at all
        await tunnel.agent(relay, "--service", f"private={echo_addr}")
        relay_port = await relay.port("relay listening on")
        forward = tunnel.start(
            "forward", "forward", "--listen", f"{HOST}:0", "--relay", f"{HOST}:{relay_port}",
            "--to", "private", *DIALER_OPTS,
        )  # fmt: skip
        await forward.line("forward connected to")
        port = await forward.port("forward listening on")
        await asyncio.gather(*(roundtrip(port, 512 * 1024) for _ in range(5)))

        nowhere = tunnel.start(
            "nowhere", "forward", "--listen", f"{HOST}:0", "--relay", f"{HOST}:{relay_port}",
            "--to", "missing", *DIALER_OPTS,
        )  # fmt: skip
        await nowhere.line("forward connected to")
        await assert_closed(await nowhere.port("forward listening on"))
        assert "no agent serves 'missing'" in nowhere.log
        assert await forward.stop() == 0


@posix
@pytest.mark.timeout(20)
async def test_max_connections_per_agent(tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--public", f"echo={HOST}:0", "--max-connections", "2")
        await tunnel.agent(relay, "--service", f"echo={echo_addr}")
        port = await relay.port("public echo on")
        held = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            held.append(writer)
        await assert_closed(port)
        assert "limit of 2 connections" in relay.log
        held.pop().close()
        await relay.wait_log("-> 'echo': done")  # the relay has freed the slot
        await roundtrip(port, 1024)  # once: a refusal now is a failure
        for writer in held:
            writer.close()


@posix
@pytest.mark.timeout(20)
async def test_idle_timeout_resets_quiet_connections(tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--public", f"echo={HOST}:0", "--idle-timeout", "0.5")
        await tunnel.agent(relay, "--service", f"echo={echo_addr}")
        reader, writer = await asyncio.open_connection(HOST, await relay.port("public echo on"))
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        loop = asyncio.get_running_loop()
        start = loop.time()
        # Reset, not closed: TUNNEL.md promises a truncated transfer never looks complete.
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        assert 0.4 < loop.time() - start < 4
        writer.close()


@posix
@pytest.mark.timeout(25)
async def test_graceful_shutdown_lets_transfers_finish(tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--public", f"echo={HOST}:0", "--grace", "10")
        agent = await tunnel.agent(relay, "--service", f"echo={echo_addr}")
        port = await relay.port("public echo on")
        first, second = os.urandom(300_000), os.urandom(300_000)
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(first)
        assert await asyncio.wait_for(reader.readexactly(len(first)), 5) == first

        relay.popen.send_signal(signal.SIGTERM)
        await relay.wait_log("SIGTERM")
        await refused(port)  # no longer accepting
        writer.write(second)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == second
        writer.close()
        assert await relay.wait(5) == 0
        await agent.wait_log("lost the relay")

        # Past the grace period, connections are reset and the relay still exits cleanly.
        listen = f"{HOST}:{await relay.port('relay listening on')}"
        relay2 = await tunnel.relay(
            "relay2", "--public", f"echo={HOST}:0", "--grace", "0.3", listen=listen
        )
        await agent.line("agent connected to", count=2)
        reader, writer = await asyncio.open_connection(HOST, await relay2.port("public echo on"))
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        assert await relay2.stop(5) == 0
        with pytest.raises(ConnectionResetError):  # cut short: reset, never a clean EOF
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert "reset 1 connections" in relay2.log
        assert await agent.stop() == 0
