"""The tunnel's messages on mio streams.

Every message is a 2-octet big-endian length followed by that many octets of a UTF-8 JSON
object with a string ``"type"``; at most :data:`MAX_MESSAGE_SIZE` octets and
:data:`MAX_DEPTH` levels of nesting (checked before parsing, so a hostile peer cannot make
the parser recurse). After the header
exchange of a data stream, the stream carries the tunneled bytes, raw.

Control stream (the first stream, opened by the agent or forwarder), see :mod:`.auth`::

    relay -> dialer   {"type": "challenge", "version": 1, "nonce": HEX32,
                       "binding": "tls-cert-sha256" | "none", "keepalive": SECONDS}
    dialer -> relay   {"type": "auth", "version": 1, "role": "agent" | "forward",
                       "name": NAME, "nonce": HEX32, "proof": HEX32,
                       "services": [NAME, ...]}            (agents only)
    relay -> dialer   {"type": "welcome", "proof": HEX32}
                   or {"type": "error", "code": "auth" | "unavailable" | "protocol",
                       "error": TEXT}

Data streams::

    opener -> peer    {"type": "open", "service": NAME, "peer": "HOST:PORT"}
    peer -> opener    {"type": "opened"}
                   or {"type": "error", "code": "unknown-service" | "connect" | "limit"
                       | "unavailable" | "protocol", "error": TEXT}

The relay opens data streams to the agent for public connections and for forwarders; a
forwarder opens data streams to the relay (``peer`` is then informational only).
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from typing import Any, Protocol

__all__ = (
    "VERSION",
    "MAX_MESSAGE_SIZE",
    "MAX_DEPTH",
    "TunnelProtocolError",
    "MessageStream",
    "read_message",
    "write_message",
    "error_message",
    "get_str",
    "get_hex",
)

#: Version of the tunnel protocol carried in the handshake.
VERSION = 1
#: Largest encoded message body accepted or sent.
MAX_MESSAGE_SIZE = 16 * 1024
#: Deepest nesting of arrays and objects accepted (the messages need 2).
MAX_DEPTH = 4

_LENGTH = struct.Struct(">H")


class TunnelProtocolError(Exception):
    """The peer sent something the tunnel protocol does not allow (or ended too early)."""


class MessageStream(Protocol):
    """What the message functions need of a stream (a :class:`mio.Stream`)."""

    async def readexactly(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...


async def read_message(stream: MessageStream, *expected: str) -> dict[str, Any]:
    """Read one message; with ``expected`` types, any other type is a protocol error.

    Raises:
        TunnelProtocolError: malformed, oversized or unexpected message, or end of stream.
    """
    try:
        (size,) = _LENGTH.unpack(await stream.readexactly(_LENGTH.size))
        if not 0 < size <= MAX_MESSAGE_SIZE:
            raise TunnelProtocolError(f"message length {size} out of range")
        body = await stream.readexactly(size)
    except asyncio.IncompleteReadError:
        raise TunnelProtocolError("stream ended before a complete message") from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise TunnelProtocolError("message is not UTF-8 JSON") from None
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise TunnelProtocolError(f"message nests deeper than {MAX_DEPTH} levels")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise TunnelProtocolError("message is not UTF-8 JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise TunnelProtocolError("message is not an object with a string 'type'")
    if expected and message["type"] not in expected:
        raise TunnelProtocolError(
            f"expected a {' or '.join(expected)} message, got {message['type']!r}"
        )
    return message


_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON ``text`` (brackets in strings skipped),
    found without recursion; malformed text gets some number (the parser rejects it)."""
    depth = deepest = 0
    for token in _STRING_OR_BRACKET.findall(text):
        if token == "[" or token == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif token == "]" or token == "}":
            depth -= 1
    return deepest


def write_message(stream: MessageStream, message: dict[str, Any]) -> None:
    """Queue one message on ``stream`` (the caller drains if it wants to)."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_MESSAGE_SIZE:
        raise ValueError(f"message of {len(body)} octets is larger than {MAX_MESSAGE_SIZE}")
    stream.write(_LENGTH.pack(len(body)) + body)


def error_message(code: str, text: str) -> dict[str, Any]:
    """An ``error`` message with a machine-readable ``code`` and a human-readable text."""
    return {"type": "error", "code": code, "error": text}


def get_str(message: dict[str, Any], key: str, *, max_length: int = 256) -> str:
    """``message[key]`` as a string of at most ``max_length`` characters, else a protocol error."""
    value = message.get(key)
    if not isinstance(value, str) or len(value) > max_length:
        raise TunnelProtocolError(f"field {key!r} missing or not a short string")
    return value


def get_hex(message: dict[str, Any], key: str, size: int) -> bytes:
    """``message[key]`` decoded from hex, exactly ``size`` octets, else a protocol error."""
    value = message.get(key)
    try:
        data = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        data = b""
    if len(data) != size:
        raise TunnelProtocolError(f"field {key!r} must be {size} octets of hex")
    return data
