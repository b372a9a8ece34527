"""The command-line toolkit shared by ``mio echo``/``bench`` and ``mio tunnel``."""

from __future__ import annotations

import argparse
import logging

import pytest

from mio import _clikit
from mio import cli as mio_cli
from mio.tunnel import cli as tunnel_cli


def test_parsers() -> None:
    assert _clikit.parse_seconds("1.5") == 1.5
    assert _clikit.parse_seconds("0") == 0
    assert _clikit.parse_seconds_or_off("off") is None
    assert _clikit.parse_count("0x10") == 16
    assert _clikit.parse_count_or_off("unlimited") is None
    assert _clikit.parse_size("1.5K") == 1536
    assert _clikit.format_size(64 * 1024) == "64K"
    assert _clikit.parse_yes_no("on") is True
    assert _clikit.parse_hostport("[::1]:0", listen=True) == ("::1", 0)
    assert _clikit.format_address(("::1", 5, 0, 0)) == "[::1]:5"
    for func, bad, message in (
        (_clikit.parse_seconds, "-1", "must not be negative"),
        (_clikit.parse_seconds, "nan", "invalid number of seconds"),
        (lambda t: _clikit.parse_seconds(t, positive=True), "0", "positive"),
        (lambda t: _clikit.parse_count(t, minimum=1), "0", "at least 1"),
        (_clikit.parse_size, "12q", "invalid size"),
        (_clikit.parse_yes_no, "maybe", "yes or no"),
        (_clikit.parse_hostport, ":80", "missing host"),
        (_clikit.parse_hostport, "h:0", "port out of range"),
    ):
        with pytest.raises(ValueError, match=message):
            func(bad)


def test_both_command_lines_use_the_same_types(capsys: pytest.CaptureFixture[str]) -> None:
    """One bad duration, the same message from ``mio echo`` and ``mio tunnel relay``; sizes
    with units work in both."""
    messages = []
    for argv in (
        ["echo", "--grace", "-1"],
        ["tunnel", "relay", "--listen", ":0", "--grace", "-1"],
    ):
        with pytest.raises(SystemExit) as info:
            mio_cli.build_parser().parse_args(argv)
        assert info.value.code == _clikit.EXIT_USAGE
        messages.append(capsys.readouterr().err.strip().splitlines()[-1].split("error: ")[-1])
    assert messages[0] == messages[1] == "argument --grace: must not be negative: '-1'"
    args = tunnel_cli.build_parser().parse_args(
        ["relay", "--listen", ":0", "--idle-min-bytes", "2K"]
    )
    assert args.idle_min_bytes == 2048
    assert mio_cli.parse_size("2K") == 2048


def test_logging_levels_are_the_same_everywhere() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for verbose, quiet, level in ((0, 0, logging.INFO), (1, 0, logging.DEBUG), (0, 2, 40)):
            args = argparse.Namespace(verbose=verbose, quiet=quiet)
            mio_cli.setup_logging(args)
            assert logging.getLogger("mio.echo").level == level
            tunnel_cli._setup_logging(args)
            assert logging.getLogger("mio.tunnel").level == level
            # the library's loggers show DEBUG only from -vv
            assert logging.getLogger("mio").level == max(level, logging.INFO)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for name in ("mio", "mio.echo", "mio.tunnel", "asyncio"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_errors_map_to_exit_statuses(caplog: pytest.LogCaptureFixture) -> None:
    def interrupted(_: object) -> int:
        raise KeyboardInterrupt

    def broken_pipe(_: object) -> int:
        raise BrokenPipeError

    assert _clikit.run_command(interrupted, None) == _clikit.EXIT_INTERRUPTED == 130
    assert _clikit.run_command(broken_pipe, None) == _clikit.EXIT_ERROR == 1
    assert _clikit.run_command(lambda _: None, None) == _clikit.EXIT_OK
    error = FileNotFoundError(2, "No such file or directory", "ca.pem")
    assert _clikit.usage_error(error, logging.getLogger("test")) == _clikit.EXIT_USAGE
    assert "ca.pem: No such file or directory" in caplog.text
    assert tunnel_cli.EXIT_USAGE == _clikit.EXIT_USAGE
