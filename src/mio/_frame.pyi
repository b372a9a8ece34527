# Stub of the compiled frame codec (_frame.pyx); its pure-Python twin is _frame_py.py.
# Kept in step with both by tests/test_stubs.py.
from collections.abc import Callable
from typing import Any

__all__ = (
    "FrameDecoder",
    "pack_header",
    "encode_open",
    "encode_data",
    "encode_window_update",
    "encode_rst",
    "encode_session_window_update",
    "encode_fin",
    "append_frame",
    "append_data",
    "KIND_OPEN",
    "KIND_DATA",
    "KIND_DATA_HFR",
    "KIND_WINDOW_UPDATE",
    "KIND_RST",
    "KIND_SESSION_WINDOW_UPDATE",
    "KIND_FIN",
)

KIND_OPEN: int
KIND_DATA: int
KIND_DATA_HFR: int
KIND_WINDOW_UPDATE: int
KIND_RST: int
KIND_SESSION_WINDOW_UPDATE: int
KIND_FIN: int

def pack_header(stream_id: int, value: int, flags: int) -> bytes: ...
def encode_open(stream_id: int, window: int) -> bytes: ...
def encode_window_update(stream_id: int, increment: int) -> bytes: ...
def encode_rst(stream_id: int, code: int) -> bytes: ...
def encode_session_window_update(increment: int = 0) -> bytes: ...
def encode_fin(code: int = 0) -> bytes: ...
def encode_data(
    stream_id: int, data: Any, max_frame_size: int = 16777215, hfr: bool = False
) -> list[Any]: ...
def append_frame(buf: bytearray, stream_id: int, value: int, flags: int) -> None: ...
def append_data(
    buf: bytearray,
    stream_id: int,
    data: Any,
    max_frame_size: int = 16777215,
    hfr: bool = False,
) -> None: ...

class FrameDecoder:
    def __init__(
        self,
        on_data: Callable[[int, bytes, bool], object],
        on_frame: Callable[[int, int, int], object],
        max_frame_size: int = 16777215,
        assemble_max: int = 0,
        sinks: dict[int, Any] | None = None,
    ) -> None: ...
    @property
    def max_frame_size(self) -> int: ...
    @property
    def assemble_max(self) -> int: ...
    @property
    def assembling(self) -> int: ...
    def payload_buffer(self) -> memoryview | None: ...
    def payload_filled(self, nbytes: int) -> None: ...
    @property
    def frames(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def in_frame(self) -> bool: ...
    def feed(self, data: Any) -> None: ...
