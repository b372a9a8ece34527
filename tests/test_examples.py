"""The example applications run, as a user would start them (subprocesses), on every transport."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RPC_ECHO = EXAMPLES / "rpc_echo.py"
TIMEOUT = 120

pytestmark = pytest.mark.skipif(
    not RPC_ECHO.is_file(), reason="examples/ is not next to tests/ (tests copied elsewhere)"
)


def _transport(name: str) -> str:
    if name == "quic" and importlib.util.find_spec("aioquic") is None:
        pytest.skip("aioquic is not installed (pip install 'mio-mux[quic]')")
    return name


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RPC_ECHO), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("transport", ["mio", "quic"])
def test_rpc_echo_demo(transport: str) -> None:
    proc = _run("demo", "--transport", _transport(transport), "--calls", "40", "--size", "3000")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"40 calls ok ({transport},"), proc.stdout


@pytest.mark.parametrize("transport", ["mio", "quic"])
def test_rpc_echo_server_and_client_processes(transport: str, tmp_path: Path) -> None:
    transport = _transport(transport)
    tls: list[str] = []
    trust: list[str] = []
    if transport == "quic":
        sys.path.insert(0, str(EXAMPLES))
        try:
            import rpc_echo
        finally:
            sys.path.remove(str(EXAMPLES))
        certfile, keyfile = rpc_echo.make_certificate(str(tmp_path))
        tls = ["--certfile", certfile, "--keyfile", keyfile]
        trust = ["--cafile", certfile]
    server = subprocess.Popen(
        [sys.executable, str(RPC_ECHO), "server", "--transport", transport, *tls],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line + server.stderr.read()
        port = line.split(":")[1].split()[0]
        client = _run("client", "--transport", transport, "--port", port, "--calls", "30", *trust)
        assert client.returncode == 0, client.stderr
        assert client.stdout.startswith("30 calls ok"), client.stdout
        server.send_signal(signal.SIGTERM)
        assert server.wait(TIMEOUT) == 0, server.stderr.read() if server.stderr else ""
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
        for pipe in (server.stdout, server.stderr):
            if pipe is not None:
                pipe.close()


def test_rpc_echo_rejects_a_client_without_port() -> None:
    proc = _run("client")
    assert proc.returncode == 2
    assert "--port" in proc.stderr
