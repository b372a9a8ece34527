"""``mio tunnel --config FILE``: the TOML file, its precedence under flags, per-service
secrets, and SIGHUP reloads with real relay and agent processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest
from tunnel_util import (
    DIALER_OPTS,
    HOST,
    SECRET,
    Tunnel,
    assert_closed,
    echo,
    ping,
    posix,
    refused,
    roundtrip,
    service,
)
from tunnel_util import tunnel as tunnel  # the fixture

from mio.tunnel import cli
from mio.tunnel.config import ConfigError
from mio.tunnel.wsaddr import parse_relay_url

DOCS = Path(__file__).resolve().parent.parent / "docs"


def resolve(command: str, *argv: str) -> object:
    return cli._resolve(cli.build_parser().parse_args([command, *argv]), command)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def secret_file(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def test_file_values_flags_and_defaults(tmp_path: Path) -> None:
    secret_file(tmp_path / "db.secret", "d" * 32)
    config = write(
        tmp_path / "relay.toml",
        """
[relay]
listen = "127.0.0.1:7000"
max-connections = 10
idle_min_bytes = "2K"
tls-key = "relay.key"

[services.web]
public = ":8080"

[services.db]
secret-file = "db.secret"
""",
    )
    args = resolve("relay", "--config", config, "--max-connections", "20", "--public", "x=:1")
    assert args.listen == ("127.0.0.1", 7000)  # from the file
    assert args.max_connections == 20  # the flag wins
    assert args.idle_min_bytes == 2048  # the file, through the option's own type
    assert args.max_pending == 64  # neither: the default
    assert args.tls_key == str(tmp_path / "relay.key")  # relative to the file
    assert args.public == [("web", None, 8080), ("x", None, 1)]
    assert args.service_secrets == {"db": b"d" * 32}
    # A flag of the same name replaces the file's service.
    args = resolve("relay", "--config", config, "--public", "web=:9090")
    assert args.public == [("web", None, 9090)]


def test_config_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    cases = {
        '[relay]\nlisten = "h:1"\nmax-conections = 3\n': "unknown option 'max-conections'",
        '[relay]\nlisten = "h:1"\nmax-connections = 0\n': "max-connections: must be at least 1",
        '[relay]\nlisten = "h:1"\n[services.web]\nlocal = "h:2"\n': "unknown key 'local'",
        '[relay]\nlisten = "h:1"\n[services.web]\npublic = "nohost"\n': "[services.web] public",
        '[agent]\nrelay = "h:1"\n': "unknown table [agent]",
        "[relay\n": "not valid TOML",
        "[relay]\n": "--listen is required",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = write(tmp_path / f"bad{i}.toml", text)
        with pytest.raises(ConfigError) as info:
            resolve("relay", "--config", path)
        assert message in str(info.value), text
        if "required" not in message:
            assert f"--config {path}" in str(info.value)
    with pytest.raises(ConfigError, match="cannot read it"):
        resolve("relay", "--config", str(tmp_path / "missing.toml"))


def test_the_example_files_are_valid(tmp_path: Path) -> None:
    for name in ("tunnel.secret", "db.secret"):
        target = tmp_path / name
        secret_file(target, "s" * 32)
    for command in ("relay", "agent"):
        example = (DOCS / f"tunnel-{command}.example.toml").read_text()
        path = write(tmp_path / f"{command}.toml", example)
        args = resolve(command, "--config", path)
        if command == "relay":
            assert args.public == [("web", "0.0.0.0", 8080)]
            assert set(args.service_secrets) == {"db"}
            assert args.ws_listen == ("0.0.0.0", 8443)
            assert args.ws_path == "/mio-tunnel"
        else:
            assert args.service == [("web", "127.0.0.1", 8000)]
            # Its commented WebSocket alternative is valid too.
            over_ws = example.replace("# relay = ", "relay = ", 1).replace(
                'relay = "relay.example.com:7000"\n', ""
            )
            ws = write(tmp_path / "ws.toml", over_ws.replace("# proxy = ", "proxy = ", 1))
            args = resolve(command, "--config", ws)
            assert args.relay == parse_relay_url("wss://relay.example.com:8443/mio-tunnel")
            assert args.proxy == "http://user:password@proxy.example.com:3128"
            assert args.proxy_ca is None
            # And its https:// proxy alternative.
            second = over_ws.split("# proxy = ", 2)[2]
            https = write(
                tmp_path / "wss.toml",
                over_ws.replace("# proxy = " + second, "proxy = " + second).replace(
                    "# proxy-ca = ", "proxy-ca = "
                ),
            )
            args = resolve(command, "--config", https)
            assert args.proxy == "https://user:password@proxy.example.com:3129"
            assert args.proxy_ca == "company-ca.pem"


@posix
@pytest.mark.timeout(40)
async def test_per_service_secrets(tunnel: Tunnel, tmp_path: Path) -> None:
    db_secret = "db-secret-" + os.urandom(12).hex()
    secret_file(tmp_path / "db.secret", db_secret)
    config = write(
        tmp_path / "relay.toml",
        f'[relay]\nlisten = "{HOST}:0"\n[services.db]\npublic = "{HOST}:0"\n'
        'secret-file = "db.secret"\n[services.web]\n' + f'public = "{HOST}:0"\n',
    )
    async with service(echo) as echo_addr:
        relay = await tunnel.relay("relay", "--config", config)
        port = await relay.port("relay listening on")
        # The main secret does not cover db ...
        intruder = tunnel.start(
            "intruder", "agent", "--relay", f"{HOST}:{port}", "--service", f"db={echo_addr}",
            *DIALER_OPTS,
        )  # fmt: skip
        assert await intruder.wait() == cli.EXIT_AUTH
        assert "does not cover 'db'" in intruder.log
        # ... the db secret does, and covers nothing else.
        wrong = tunnel.start(
            "wrong", "agent", "--relay", f"{HOST}:{port}", "--service", f"web={echo_addr}",
            *DIALER_OPTS, secret=db_secret,
        )  # fmt: skip
        assert await wrong.wait() == cli.EXIT_AUTH
        await tunnel.agent(relay, "--service", f"db={echo_addr}", name="db-agent", secret=db_secret)
        await roundtrip(await relay.port("public db on"), 64 * 1024)
        # Forwarders: the db secret reaches db, and nothing else.
        for to, works in (("db", True), ("web", False)):
            forward = tunnel.start(
                f"forward-{to}", "forward", "--listen", f"{HOST}:0", "--relay", f"{HOST}:{port}",
                "--to", to, *DIALER_OPTS, secret=db_secret,
            )  # fmt: skip
            await forward.line("forward connected to")
            local = await forward.port("forward listening on")
            if works:
                await roundtrip(local, 64 * 1024)
            else:
                await assert_closed(local)
                await forward.wait_log("does not cover 'web'")
        assert db_secret not in relay.log


@posix
@pytest.mark.timeout(60)
async def test_sighup_reloads_services_without_dropping_connections(
    tunnel: Tunnel, tmp_path: Path
) -> None:
    relay_toml = tmp_path / "relay.toml"
    agent_toml = tmp_path / "agent.toml"
    async with service(echo) as echo_addr, service(echo) as other_addr:
        relay_toml.write_text(
            f'[relay]\nlisten = "{HOST}:0"\n[services.echo]\npublic = "{HOST}:0"\n'
            f'[services.gone]\npublic = "{HOST}:0"\n'
        )
        relay = await tunnel.relay("relay", "--config", str(relay_toml))
        relay_port = await relay.port("relay listening on")
        agent_toml.write_text(
            f'[agent]\nrelay = "{HOST}:{relay_port}"\n[services.echo]\nlocal = "{echo_addr}"\n'
        )
        agent = await tunnel.agent(relay, "--config", str(agent_toml))
        echo_port = await relay.port("public echo on")
        gone_port = await relay.port("public gone on")
        held = await ping(echo_port)  # open across both reloads

        # The relay: add "other", drop "gone"; "echo" and its connection stay.
        relay_toml.write_text(
            f'[relay]\nlisten = "{HOST}:{relay_port}"\n[services.echo]\npublic = "{HOST}:0"\n'
            f'[services.other]\npublic = "{HOST}:0"\n'
        )
        relay.popen.send_signal(signal.SIGHUP)
        other_port = await relay.port("public other on")
        await relay.wait_log("configuration reloaded")
        await refused(gone_port)
        assert await relay.port("public echo on") == echo_port  # not rebound
        await assert_closed(other_port)  # no agent serves "other" yet

        # The agent: serve "other" too, registered on the live link (no reconnection).
        agent_toml.write_text(
            f'[agent]\nrelay = "{HOST}:{relay_port}"\n[services.echo]\nlocal = "{echo_addr}"\n'
            f'[services.other]\nlocal = "{other_addr}"\n'
        )
        agent.popen.send_signal(signal.SIGHUP)
        await relay.wait_log("now serves echo, other")
        await roundtrip(other_port, 64 * 1024)
        assert len([x for x in agent.lines() if x.startswith("agent connected")]) == 1

        # A broken file is refused and the running configuration kept ...
        relay_toml.write_text("[relay\n")
        relay.popen.send_signal(signal.SIGHUP)
        await relay.wait_log("SIGHUP: configuration not reloaded")
        await roundtrip(other_port, 1024)
        # ... and so is one with a port that cannot be bound: nothing changes.
        with socket.socket() as busy:
            busy.bind((HOST, 0))
            busy.listen()
            relay_toml.write_text(
                f'[relay]\nlisten = "{HOST}:{relay_port}"\n'
                f'[services.third]\npublic = "{HOST}:{busy.getsockname()[1]}"\n'
            )
            relay.popen.send_signal(signal.SIGHUP)
            await relay.wait_log(f"--public third {HOST}:{busy.getsockname()[1]}: cannot listen")
        assert relay.log.count("SIGHUP: configuration not reloaded") == 2
        await roundtrip(other_port, 1024)  # "other" and "echo" were not removed
        await roundtrip(echo_port, 1024)

        reader, writer = held
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
        writer.close()
        assert await relay.stop() == 0
        assert SECRET not in relay.log
