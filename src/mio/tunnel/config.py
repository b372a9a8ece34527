"""The tunnel's TOML configuration file (``--config FILE``), merged with the command line.

One file per process. Its ``[relay]``, ``[agent]`` or ``[forward]`` table holds options by
their long names (``tls-cert`` or ``tls_cert``; every option of the command but
``--config``); ``[services.NAME]`` tables hold the services::

    [relay]                              [agent]
    listen = "0.0.0.0:7000"              relay = "relay.example:7000"
    secret-file = "tunnel.secret"        secret-file = "tunnel.secret"
    tls-cert = "relay.crt"               tls-fingerprint = "sha256:..."

    [services.web]                       [services.web]
    public = "0.0.0.0:8080"              local = "127.0.0.1:8000"
    secret-file = "web.secret"

Values go through the same checks as on the command line. Precedence: a flag on the command
line, then the file, then the built-in default; ``--public``/``--service`` flags add
services to the file's (or replace one of the same name). Paths in the file are relative to
the file's directory. A relay service's ``secret-file`` gives it a secret of its own: only
agents and forwarders holding that secret may serve or reach it.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Sequence
from typing import Any

__all__ = ("ConfigError", "defer_defaults", "load", "merge")

#: Options whose values are file paths (resolved against the config file's directory).
PATH_OPTIONS = frozenset({"secret_file", "tls_cert", "tls_key", "tls_ca"})
#: Keys of a ``[services.NAME]`` table, per command.
SERVICE_KEYS = {
    "relay": frozenset({"public", "secret_file"}),
    "agent": frozenset({"local"}),
    "forward": frozenset(),
}


class ConfigError(ValueError):
    """The configuration file is unreadable or wrong; the message names file and key."""


def defer_defaults(parser: argparse.ArgumentParser) -> None:
    """Make every option of ``parser`` default to None, so that :func:`merge` can tell a
    flag given on the command line from one left out; the real defaults are kept (and
    shown in ``--help``) and required options are checked by :func:`merge`."""
    defaults: dict[str, Any] = {}
    required: dict[str, str] = {}
    for action in parser._actions:
        if action.dest in (argparse.SUPPRESS, "help") or not action.option_strings:
            continue
        if isinstance(action, argparse._CountAction):
            continue  # -v/-q: counted, never in the file
        if action.help and "%(" in action.help:
            action.help = action.help % {**vars(action), "prog": parser.prog}
        defaults[action.dest] = action.default
        action.default = None
        if action.required:
            action.required = False
            required[action.dest] = action.option_strings[0]
            if action.help:
                action.help = action.help.replace("(required", "(required, or in --config")
    parser.set_defaults(_file_defaults=defaults, _file_required=required)


def load(path: str, command: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(options, services)`` of ``path`` for ``command``, keys as argparse dests."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    base = os.path.dirname(os.path.abspath(path))
    unknown = set(doc) - {command, "services"}
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown table [{sorted(unknown)[0]}] (a {command} reads "
            f"[{command}] and [services.NAME])"
        )
    options = {_dest(k): v for k, v in _table(doc, command, path).items()}
    for key in PATH_OPTIONS & options.keys():
        if isinstance(options[key], str):
            options[key] = os.path.join(base, options[key])
    services: dict[str, dict[str, Any]] = {}
    for name, table in _table(doc, "services", path).items():
        if not isinstance(table, dict):
            raise ConfigError(f"--config {path}: [services.{name}] must be a table")
        entry = {_dest(k): v for k, v in table.items()}
        bad = set(entry) - SERVICE_KEYS[command]
        if bad:
            allowed = ", ".join(sorted(k.replace("_", "-") for k in SERVICE_KEYS[command]))
            raise ConfigError(
                f"--config {path}: [services.{name}]: unknown key "
                f"{sorted(bad)[0].replace('_', '-')!r} (a {command} knows: {allowed or 'none'})"
            )
        if "secret_file" in entry and isinstance(entry["secret_file"], str):
            entry["secret_file"] = os.path.join(base, entry["secret_file"])
        services[name] = entry
    return options, services


def merge(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    options: dict[str, Any],
    path: str | None,
) -> None:
    """Fill every option not given on the command line from ``options`` (the file's,
    checked with the option's own type) or else its default; then check required ones."""
    defaults: dict[str, Any] = getattr(args, "_file_defaults", {})
    required: dict[str, str] = getattr(args, "_file_required", {})
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    for key, value in options.items():
        action = actions.get(key)
        if action is None or key not in defaults or key == "config":
            raise ConfigError(f"--config {path}: unknown option {key.replace('_', '-')!r}")
        if getattr(args, key) is not None:
            continue  # the command line wins
        setattr(args, key, _convert(action, value, path))
    for key, default in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    for key, flag in required.items():
        if getattr(args, key) in (None, []):
            raise ConfigError(
                f"{flag} is required (on the command line, or as "
                f"`{key.replace('_', '-')}` in the --config file)"
            )


def _convert(action: argparse.Action, value: Any, path: str | None) -> Any:
    name = action.dest.replace("_", "-")
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigError(f"--config {path}: {name} must be true or false")
        return value
    if isinstance(value, (dict, list, bool)):
        raise ConfigError(f"--config {path}: {name} must be a string or a number")
    convert = action.type if callable(action.type) else str
    try:
        return convert(str(value))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ConfigError(f"--config {path}: {name}: {exc}") from None


def _dest(key: str) -> str:
    return key.replace("-", "_")


def _table(doc: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"--config {path}: {key} must be a table ([{key}])")
    return table


def named(values: Sequence[tuple[str, Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """``[(name, host, port), ...]`` as a dict; later entries replace earlier ones."""
    return {name: (host, port) for name, host, port in values}
