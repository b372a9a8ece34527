"""The ``mio`` command line: ``--version``, ``python -m mio``, ``mio echo`` as a real server
process (a mio client echoes through it, SIGTERM stops it with exit code 0), the Config flags,
and a smoke run of ``mio bench`` (mio and raw TCP, asyncio, tiny totals)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import mio
from mio import cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def run_mio(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# ---------------------------------------------------------------------------- version, help
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"mio-mux {mio.__version__} (")
    if mio.EXTENSIONS_ACTIVE:
        assert "compiled extensions active" in out
    else:
        assert "NOT active" in out


def test_version_reports_pure_python_codec() -> None:
    env = dict(os.environ, MIO_NO_EXTENSIONS="1")
    proc = run_mio("--version", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"mio-mux {mio.__version__} (")
    assert "compiled extensions NOT active" in proc.stdout
    assert "MIO_NO_EXTENSIONS" in proc.stdout


def test_python_m_mio_help() -> None:
    proc = run_mio("--help")
    assert proc.returncode == 0, proc.stderr
    for word in ("echo", "bench", "--version", "usage: mio"):
        assert word in proc.stdout


def test_console_script_entry_point() -> None:
    scripts = metadata.entry_points(group="console_scripts")
    (entry,) = [e for e in scripts if e.name == "mio"]
    assert entry.value == "mio.cli:main"
    assert entry.load() is cli.main


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: mio" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["echo", "bench"])
def test_subcommand_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert f"usage: mio {command}" in capsys.readouterr().out


def test_tunnel_commands_registered_when_available(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = "tunnel" in capsys.readouterr().out
    assert listed == (cli.tunnel_cli is not None)


# ---------------------------------------------------------------------------- option parsing
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("65536", 65536),
        ("64K", 65536),
        ("64KiB", 65536),
        ("1M", 1 << 20),
        ("1.5k", 1536),
        ("0x10000", 65536),
        ("2g", 2 << 30),
        ("16_384", 16384),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert cli.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "K", "1.1", "12q", "-1"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(Exception, match="size"):
        cli.parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7000", ("127.0.0.1", 7000)),
        (":0", (None, 0)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str | None, int]) -> None:
    assert cli.parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["7000", "::1:80", "host:http", "host:70000"])
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(Exception, match=r"PORT|port|brackets"):
        cli.parse_hostport(text)


def test_every_config_field_has_an_echo_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["echo", "--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(mio.Config):
        assert f"Config.{field.name})" in text, field.name


def test_echo_flags_build_the_config() -> None:
    args = cli.build_parser().parse_args(
        [
            "echo",
            "--window",
            "1M",
            "--max-window",
            "4M",
            "--max-frame-size",
            "16K",
            "--max-recv-frame-size",
            "1M",
            "--max-streams",
            "10",
            "--accept-backlog",
            "5",
            "--write-buffer-high",
            "2M",
            "--keepalive",
            "2.5",
            "--idle-timeout",
            "off",
            "--linger-timeout",
            "1",
            "--close-timeout",
            "0",
        ]
    )
    assert cli.config_from_args(args) == mio.Config(
        initial_window=1 << 20,
        max_window=4 << 20,
        max_frame_size=16384,
        max_recv_frame_size=1 << 20,
        max_streams=10,
        accept_backlog=5,
        write_buffer_high=2 << 20,
        keepalive_interval=2.5,
        idle_timeout=None,
        linger_timeout=1.0,
        close_timeout=0.0,
    )
    defaults = cli.build_parser().parse_args(["echo"])
    assert cli.config_from_args(defaults) == mio.Config()
    assert defaults.listen == ("127.0.0.1", 7000)


def test_echo_invalid_config_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["echo", "--window", "8M", "--max-window", "1M"])
    assert info.value.code == 2
    assert "max_window" in capsys.readouterr().err


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """``cli.main`` sets up logging for the process (root handlers, mio's levels): undo it,
    so that later tests still see mio's warnings."""
    root = logging.getLogger()
    names = ("mio", "asyncio", cli.log.name)
    handlers = root.handlers[:]
    levels = {name: logging.getLogger(name).level for name in names}
    root_level = root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def echo_config(*argv: str) -> mio.Config:
    return cli.config_from_args(cli.build_parser().parse_args(["echo", *argv]))


def test_echo_peer_reference_is_the_base_config() -> None:
    assert echo_config("--peer", "reference") == mio.Config.for_reference()
    assert echo_config("--peer", "mio") == mio.Config() == echo_config()
    # explicit flags override the preset, whatever their order
    assert echo_config(
        "--max-frame-size", "1K", "--peer", "reference", "--send-resets", "yes"
    ) == mio.Config.for_reference(max_frame_size=1024, send_resets=True)
    assert echo_config("--peer", "reference", "--window", "64K") == mio.Config.for_reference(
        initial_window=64 * 1024
    )
    # the README's way still works: only the frame size changes
    assert echo_config("--max-frame-size", "128") == mio.Config(max_frame_size=128)


def test_echo_send_resets_flag() -> None:
    assert echo_config("--send-resets", "no") == mio.Config(send_resets=False)
    assert echo_config("--send-resets", "off").send_resets is False
    assert echo_config("--send-resets", "YES").send_resets is True
    assert echo_config().send_resets is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--send-resets", "maybe"],
        ["--peer", "go"],
        ["--max-sessions", "0"],
        ["--max-sessions", "many"],
        ["--memory-limit", "0"],
        ["--memory-limit", "lots"],
        ["--peer", "reference", "--max-window", "1M"],  # below the preset's 0xFFFFFF window
    ],
)
@pytest.mark.usefixtures("keep_logging")
def test_echo_bad_limits_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["echo", *argv])
    assert info.value.code == 2
    assert "usage: mio echo" in capsys.readouterr().err


def test_echo_server_limit_flags() -> None:
    parser = cli.build_parser()
    defaults = parser.parse_args(["echo"])
    assert defaults.max_sessions == mio.api.DEFAULT_MAX_SESSIONS == 4096
    assert defaults.memory_limit == 1 << 30
    assert defaults.peer == "mio"
    args = parser.parse_args(["echo", "--max-sessions", "10", "--memory-limit", "256M"])
    assert (args.max_sessions, args.memory_limit) == (10, 256 << 20)
    assert parser.parse_args(["echo", "--max-sessions", "off"]).max_sessions is None


@pytest.mark.usefixtures("keep_logging")
def test_echo_passes_limits_and_preset_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``mio echo`` hands to ``mio.serve`` (which then fails to listen, ending it)."""
    seen: dict[str, object] = {}

    async def fake_serve(*args: object, **kwargs: object) -> mio.Server:
        seen.update(kwargs)
        raise OSError("not listening in this test")

    monkeypatch.setattr(mio, "serve", fake_serve)
    argv = ["echo", "--listen", "127.0.0.1:0", "--peer", "reference", "--max-streams", "2000"]
    code = cli.main([*argv, "--max-sessions", "7", "--memory-limit", "3M", "-qq"])
    assert code == 1
    assert seen["config"] == mio.Config.for_reference(max_streams=2000)
    assert seen["max_sessions"] == 7
    budget = seen["budget"]
    assert isinstance(budget, mio.MemoryBudget)
    assert budget.limit == 3 << 20
    seen.clear()
    assert cli.main(["echo", "--listen", "127.0.0.1:0", "--max-sessions", "off", "-qq"]) == 1
    assert seen["max_sessions"] is None
    assert seen["config"] == mio.Config()


# ---------------------------------------------------------------------------- mio echo
@contextlib.contextmanager
def echo_process(*argv: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``mio echo --listen 127.0.0.1:0 ARGV...`` once it listens: (process, port)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mio", "echo", "--listen", "127.0.0.1:0", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints it once ready
        assert line.startswith("listening on 127.0.0.1:"), (line, proc.stderr.read())
        yield proc, int(line.rsplit(":", 1)[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.fixture
def echo_server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    with echo_process("--window", "64K", "-v") as server:
        yield server


async def test_echo_server_process(echo_server: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = echo_server
    session = await mio.connect("127.0.0.1", port)

    async def one(i: int) -> None:
        stream = await session.open_stream()
        data = os.urandom(1000 * i + 1)  # up to ~200 KiB: several windows of 64 KiB
        stream.write(data)
        stream.write_eof()
        await stream.drain()
        assert await stream.read() == data
        await stream.wait_closed()

    await asyncio.gather(*(one(i) for i in range(200)))
    # a stream stays open (idle) while the server is told to stop
    stream = await session.open_stream()
    stream.write(b"ping")
    assert await stream.readexactly(4) == b"ping"
    proc.send_signal(signal.SIGTERM)
    stream.write_eof()  # the graceful close lets it finish
    assert await stream.read() == b""
    await asyncio.wait_for(session.wait_closed(), 10)
    code = await asyncio.to_thread(proc.wait, 10)
    assert code == 0
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "Traceback" not in err
    assert "stopped: 1 sessions, 201 streams" in err


@pytest.fixture
def one_session_echo_server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    with echo_process("--max-sessions", "1") as server:
        yield server


async def test_echo_server_refuses_sessions_over_max_sessions(
    one_session_echo_server: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = one_session_echo_server
    first = await mio.connect("127.0.0.1", port)
    second: mio.Session | None = None
    try:
        stream = await first.open_stream()
        stream.write(b"one")
        assert await stream.readexactly(3) == b"one"
        second = await mio.connect("127.0.0.1", port)  # once the first one is served
        with pytest.raises(mio.SessionClosedError) as info:
            await asyncio.wait_for((await second.open_stream()).read(), 10)
        assert info.value.code == mio.ErrorCode.REFUSED
        stream.write(b"still")
        assert await stream.readexactly(5) == b"still"
        proc.send_signal(signal.SIGTERM)
        stream.write_eof()
        assert await stream.read() == b""
        await asyncio.wait_for(first.wait_closed(), 10)
        assert await asyncio.to_thread(proc.wait, 10) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "refused a connection from 127.0.0.1:" in err
        assert "(max_sessions 1)" in err
        assert "1 connections were refused" in err
        assert "Traceback" not in err
    finally:
        first.close()
        if second is not None:
            second.close()


async def test_echo_server_stops_on_sigint_with_idle_session(
    echo_server: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = echo_server
    session = await mio.connect("127.0.0.1", port)
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(session.wait_closed(), 10)
    assert await asyncio.to_thread(proc.wait, 10) == 0


# ---------------------------------------------------------------------------- mio bench
def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.jsonl"
    proc = run_mio(
        "bench",
        "--smoke",
        "--systems",
        "mio,tcp-b,tcp-task",
        "--loop",
        "asyncio",
        "--json",
        str(out),
        "--no-progress",
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout
    assert max(len(line) for line in table.splitlines()) <= 100, table
    assert "targets (indicative)" in table
    assert "W2 mio ÷ raw TCP (b) req/s ≥ 0.3" in table
    assert "run.py" not in proc.stdout + proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    meta = [r for r in records if r["type"] == "meta"]
    runs = [r for r in records if r["type"] == "run"]
    assert len(meta) == 1
    assert meta[0]["preset"] == "smoke"
    assert {(r["system"], r["workload"]) for r in runs} == {
        ("mio", "W1"),
        ("mio", "W2"),
        ("mio", "W3"),
        ("mio", "W4"),
        ("tcp-b", "W1"),
        ("tcp-b", "W2"),
        ("tcp-b", "W3"),
        ("tcp-task", "W2"),
        ("tcp-task", "W3"),
    }
    assert all(r["ok"] for r in runs), [r.get("error") for r in runs]
    assert all(r["loop"] == "asyncio" for r in runs)


def test_bench_markdown_report_and_check_exit_code(tmp_path: Path) -> None:
    proc = run_mio(
        "bench",
        "--smoke",
        "--systems",
        "mio",
        "--workloads",
        "W4",
        "--loop",
        "asyncio",
        "--markdown",
        "--no-progress",
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "## Targets" in proc.stdout
    assert "| mio | asyncio |" in proc.stdout
    assert "indicative" in proc.stdout
    # --check is for full sizes only: the verdicts of scaled-down runs are indicative
    proc = run_mio("bench", "--quick", "--check", "--no-progress", timeout=30)
    assert proc.returncode == 2
    assert "--check needs the full sizes" in proc.stderr


def test_bench_check_exits_3_on_a_missed_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mio._bench import runner

    def fake_run(settings: Any, progress: Any) -> Any:
        rec = {"type": "run", "round": 0, "attempt": 0, "loop": "asyncio", "ok": True}
        records = [
            {
                **rec,
                "system": "mio",
                "workload": "W4",
                "alone_p99_us": 1.0,
                "bulk_p99_us": 9.0,
                "p99_ratio": 9.0,
            },
        ]
        return runner.BenchResult({"run_id": "x", "preset": settings.preset}, records)

    monkeypatch.setattr(runner, "run_bench", fake_run)
    argv = ["bench", "--systems", "mio", "--workloads", "W4", "--loop", "asyncio", "--no-progress"]
    assert cli.main(argv) == 0
    assert cli.main([*argv, "--check"]) == 3
    assert "W4 mio p99 bulk ÷ alone ≤ 1.5 (asyncio): MISSED" in capsys.readouterr().err


def test_bench_rejects_unknown_system(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", "--systems", "mio,nope"])
    assert info.value.code == 2
    assert "nope" in capsys.readouterr().err


# ---------------------------------------------------------------------------- --loop auto
def test_loop_auto_is_uvloop_where_installed_else_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from mio._bench import common

    installed = importlib.util.find_spec("uvloop") is not None
    assert common.resolve_loop("auto") == ("uvloop" if installed else "asyncio")
    assert common.loop_available("auto") is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert common.resolve_loop("auto") == "asyncio"  # never fails for want of uvloop
    loop = common.loop_factory("auto")()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()
    assert common.resolve_loop("uvloop") == "uvloop"  # an explicit choice is kept


@pytest.mark.parametrize("argv", [("--loop", "auto"), ()], ids=["auto", "default"])
def test_echo_runs_on_the_loop_auto_picks(argv: tuple[str, ...]) -> None:
    import importlib.util

    expect = "uvloop.Loop" if importlib.util.find_spec("uvloop") else "asyncio.unix_events."
    with echo_process(*argv) as (proc, _):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert f"event loop: {expect}" in err
