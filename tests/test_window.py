"""Flow-control windows: SendWindow and RecvWindow, against both implementations.

The last tests drive random operation sequences through both implementations (hypothesis)
and compare every result, exception and property.
"""

from __future__ import annotations

import copy
import pickle
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mio
from mio.wire import MAX_WINDOW, ErrorCode

if TYPE_CHECKING:
    from conftest import Impl


# --------------------------------------------------------------------------------------------
# SendWindow.


def test_send_window_starts_at_initial(impl: Impl) -> None:
    assert impl.window.SendWindow(100).available == 100
    assert impl.window.SendWindow(0).available == 0
    assert impl.window.SendWindow(MAX_WINDOW).available == MAX_WINDOW


def test_reserve_full_partial_and_zero(impl: Impl) -> None:
    w = impl.window.SendWindow(100)
    assert w.reserve(30) == 30
    assert w.available == 70
    assert w.reserve(0) == 0
    assert w.available == 70
    assert w.reserve(200) == 70  # partial: only what the window allows
    assert w.available == 0
    assert w.reserve(1) == 0  # exhausted
    assert w.reserve(2**80) == 0
    assert w.available == 0


def test_grow_returns_new_credit(impl: Impl) -> None:
    w = impl.window.SendWindow(10)
    assert w.reserve(10) == 10
    assert w.grow(25) == 25
    assert w.available == 25
    assert w.grow(0) == 25
    assert w.reserve(5) == 5
    assert w.grow(MAX_WINDOW - 20) == MAX_WINDOW  # exactly the limit is fine


@pytest.mark.parametrize(
    ("initial", "increment"), [(MAX_WINDOW, 1), (10, MAX_WINDOW - 9), (0, 2**80)]
)
def test_grow_overflow_is_a_flow_control_error(impl: Impl, initial: int, increment: int) -> None:
    w = impl.window.SendWindow(initial)
    with pytest.raises(mio.FlowControlError, match="overflows the send window") as info:
        w.grow(increment)
    assert isinstance(info.value, mio.ProtocolError)
    assert info.value.error_code == ErrorCode.FLOW_CONTROL_ERROR
    assert w.available == initial  # unchanged


WINDOW_VALUE_ERRORS: list[tuple[str, Any, str]] = [
    ("send-negative", lambda m: m.SendWindow(-1), "initial window"),
    ("send-too-big", lambda m: m.SendWindow(MAX_WINDOW + 1), "initial window"),
    ("reserve-negative", lambda m: m.SendWindow(10).reserve(-1), "negative"),
    ("grow-negative", lambda m: m.SendWindow(10).grow(-1), "negative"),
    ("recv-zero", lambda m: m.RecvWindow(0), "initial window"),
    ("recv-negative", lambda m: m.RecvWindow(-5), "initial window"),
    ("recv-too-big", lambda m: m.RecvWindow(MAX_WINDOW + 1), "initial window"),
    ("max-below-initial", lambda m: m.RecvWindow(100, 99), "max window"),
    ("max-too-big", lambda m: m.RecvWindow(100, MAX_WINDOW + 1), "max window"),
    ("receive-negative", lambda m: m.RecvWindow(100).receive(-1), "negative"),
    ("consume-negative", lambda m: m.RecvWindow(100).consume(-1), "cannot consume"),
    ("consume-unbuffered", lambda m: m.RecvWindow(100).consume(1), "cannot consume"),
]


@pytest.mark.parametrize(
    ("call", "match"),
    [(c, m) for _, c, m in WINDOW_VALUE_ERRORS],
    ids=[n for n, _, _ in WINDOW_VALUE_ERRORS],
)
def test_value_errors(impl: Impl, call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        call(impl.window)
    assert not isinstance(info.value, mio.MioError)


WINDOW_TYPE_ERRORS: list[tuple[str, Any]] = [
    ("send-float", lambda m: m.SendWindow(10.0)),
    ("send-none", lambda m: m.SendWindow(None)),
    ("reserve-float", lambda m: m.SendWindow(10).reserve(1.5)),
    ("reserve-float-over-window", lambda m: m.SendWindow(1).reserve(1.5)),
    ("grow-float", lambda m: m.SendWindow(10).grow(1.0)),
    ("recv-float", lambda m: m.RecvWindow(10.0)),
    ("recv-max-float", lambda m: m.RecvWindow(10, 20.0)),
    ("receive-float", lambda m: m.RecvWindow(10).receive(1.5)),
    ("consume-float", lambda m: m.RecvWindow(10).consume(0.0)),
]


@pytest.mark.parametrize(
    "call", [c for _, c in WINDOW_TYPE_ERRORS], ids=[n for n, _ in WINDOW_TYPE_ERRORS]
)
def test_type_errors(impl: Impl, call: Any) -> None:
    # A float is refused, never truncated (the compiled module used to truncate it).
    with pytest.raises(TypeError, match=r"cannot be interpreted as an integer|NoneType"):
        call(impl.window)


def test_errors_identical_across_implementations(both_impls: list[Impl]) -> None:
    calls = [(n, c) for n, c, _ in WINDOW_VALUE_ERRORS] + WINDOW_TYPE_ERRORS
    for name, call in calls:
        seen = set()
        for impl in both_impls:
            with pytest.raises((ValueError, TypeError)) as info:
                call(impl.window)
            seen.add((type(info.value), str(info.value)))
        assert len(seen) == 1, (name, seen)


def test_int_like_arguments(impl: Impl) -> None:
    w = impl.window.SendWindow(True)
    assert w.available == 1
    assert w.grow(ErrorCode.CLOSED) == 4
    r = impl.window.RecvWindow(ErrorCode.REFUSED, ErrorCode.EXHAUSTED)
    assert (r.window, r.max_window) == (4, 5)


# --------------------------------------------------------------------------------------------
# RecvWindow.


def test_recv_window_properties(impl: Impl) -> None:
    r = impl.window.RecvWindow(1000)
    assert (r.window, r.max_window, r.available, r.buffered, r.pending) == (1000, 1000, 1000, 0, 0)
    r = impl.window.RecvWindow(1000, 4000)
    assert (r.window, r.max_window) == (1000, 4000)
    r = impl.window.RecvWindow(1000, None)
    assert r.max_window == 1000
    r.receive(300)
    assert (r.available, r.buffered, r.pending) == (700, 300, 0)
    assert r.consume(100) == 0
    assert (r.available, r.buffered, r.pending) == (700, 200, 100)


def test_receive_up_to_the_window(impl: Impl) -> None:
    r = impl.window.RecvWindow(100)
    r.receive(0)
    r.receive(60)
    r.receive(40)
    assert (r.available, r.buffered) == (0, 100)
    r.receive(0)


@pytest.mark.parametrize(("first", "second"), [(0, 101), (100, 1), (60, 41), (0, 2**80)])
def test_receive_beyond_the_window(impl: Impl, first: int, second: int) -> None:
    r = impl.window.RecvWindow(100)
    r.receive(first)
    with pytest.raises(mio.FlowControlError, match="bytes of window left") as info:
        r.receive(second)
    assert isinstance(info.value, mio.ProtocolError)
    assert info.value.error_code == ErrorCode.FLOW_CONTROL_ERROR
    assert (r.available, r.buffered) == (100 - first, first)  # unchanged


def test_consume_batches_updates_until_half_the_window(impl: Impl) -> None:
    r = impl.window.RecvWindow(100)
    r.receive(60)  # the peer stays above a quarter: no auto-tuning (and none possible)
    for _ in range(49):
        assert r.consume(1) == 0
    assert r.pending == 49
    assert r.available == 40
    assert r.consume(1) == 50  # half the window pending: one batched update
    assert (r.window, r.available, r.buffered, r.pending) == (100, 90, 10, 0)
    assert r.consume(10) == 0
    assert r.pending == 10


def test_consume_odd_window(impl: Impl) -> None:
    r = impl.window.RecvWindow(101)  # half is 50 (rounded down)
    r.receive(50)
    assert r.consume(49) == 0
    assert r.consume(1) == 50


def test_tiny_window(impl: Impl) -> None:
    r = impl.window.RecvWindow(1)
    assert r.consume(0) == 0  # nothing pending: never an empty update
    r.receive(1)
    assert r.consume(1) == 1
    assert r.available == 1


def test_flush(impl: Impl) -> None:
    r = impl.window.RecvWindow(100)
    assert r.flush() == 0
    r.receive(30)
    assert r.consume(20) == 0
    assert r.flush() == 20
    assert (r.available, r.buffered, r.pending) == (90, 10, 0)
    assert r.flush() == 0
    assert r.consume(10) == 0
    assert r.flush() == 10
    assert r.available == 100


def test_auto_tuning_doubles_the_window(impl: Impl) -> None:
    r = impl.window.RecvWindow(1000, max_window=3000)
    r.receive(800)  # within a quarter of the end: 200 <= 250
    assert r.consume(800) == 800 + 1000  # the growth is in the increment
    assert (r.window, r.available, r.buffered, r.pending) == (2000, 2000, 0, 0)
    r.receive(1600)  # within a quarter again: 400 <= 500
    assert r.consume(1600) == 1600 + 1000  # doubling is capped at max_window
    assert (r.window, r.available) == (3000, 3000)
    r.receive(3000)
    assert r.consume(3000) == 3000  # at max_window: no more growth
    assert (r.window, r.available) == (3000, 3000)


def test_auto_tuning_exactly_a_quarter_buffered(impl: Impl) -> None:
    r = impl.window.RecvWindow(1000, max_window=10_000)
    r.receive(750)
    assert r.consume(500) == 500 + 1000  # 250 still buffered: exactly a quarter counts
    assert r.window == 2000


def test_no_growth_when_the_reader_lags(impl: Impl) -> None:
    r = impl.window.RecvWindow(1000, max_window=10_000)
    r.receive(800)
    assert r.consume(500) == 500  # 300 still buffered: more than a quarter
    assert (r.window, r.available) == (1000, 700)


def test_no_growth_without_max_window(impl: Impl) -> None:
    r = impl.window.RecvWindow(1000)
    r.receive(1000)
    assert r.consume(1000) == 1000
    assert (r.window, r.available) == (1000, 1000)


def test_growth_resumes_once_the_reader_catches_up(impl: Impl) -> None:
    r = impl.window.RecvWindow(1000, max_window=10_000)
    r.receive(1000)
    assert r.consume(500) == 500  # lagging: 500 still buffered
    assert r.window == 1000
    assert r.consume(500) == 500 + 1000  # caught up: the next due update grows
    assert (r.window, r.available, r.buffered) == (2000, 2000, 0)


def test_flush_never_grows_the_window(impl: Impl) -> None:
    r = impl.window.RecvWindow(1000, max_window=10_000)
    r.receive(800)
    assert r.consume(100) == 0
    assert r.flush() == 100
    assert r.window == 1000
    assert r.consume(700) == 700 + 1000  # a later regular update may grow it
    assert r.window == 2000


@pytest.mark.parametrize(
    ("offered", "final_window"),
    [
        (1 << 20, 65536),  # window-limited sender: the window grows to the ceiling
        (10_000, 32768),  # application-limited: grows until 10 000 fit in half the window
        (1000, 4096),  # the flush path announces everything early: no growth
    ],
)
def test_recv_window_in_a_session_like_loop(impl: Impl, offered: int, final_window: int) -> None:
    r = impl.window.RecvWindow(4096, max_window=65536)
    s = impl.window.SendWindow(4096)
    sent = received_total = 0
    for _ in range(200):  # the sender offers ``offered`` bytes, the reader reads everything
        n = s.reserve(offered)
        sent += n
        r.receive(n)
        increment = r.consume(r.buffered) or r.flush()
        s.grow(increment)
        received_total += n
        assert r.available + r.buffered + r.pending == r.window
        assert s.available == r.available
    assert r.window == final_window
    assert sent == received_total


@pytest.mark.parametrize(
    "clone", [copy.copy, copy.deepcopy, lambda w: pickle.loads(pickle.dumps(w))]
)
def test_windows_copy_and_pickle(impl: Impl, clone: Any) -> None:
    r = impl.window.RecvWindow(1000, 4000)
    r.receive(900)
    assert r.consume(100) == 0
    r2 = clone(r)
    assert type(r2) is type(r)
    state = (r.window, r.max_window, r.available, r.buffered, r.pending)
    assert (r2.window, r2.max_window, r2.available, r2.buffered, r2.pending) == state
    assert r2.consume(500) == r.consume(500) == 600  # 300 still buffered: no growth, in both
    s = impl.window.SendWindow(77)
    s2 = clone(s)
    assert s2.reserve(100) == 77
    assert s.available == 77  # independent copies


# --------------------------------------------------------------------------------------------
# Differential: random operation sequences on both implementations.

amounts = st.one_of(
    st.integers(-2, 300),
    st.integers(0, MAX_WINDOW),
    st.sampled_from([MAX_WINDOW, MAX_WINDOW + 1, 2**63, -(2**63), 2**80]),
)
send_ops = st.lists(st.tuples(st.sampled_from(["reserve", "grow"]), amounts), max_size=30)
recv_ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["receive", "consume"]), amounts),
        # Amounts relative to the state, to hit the boundaries (quarter, half, exhausted).
        st.tuples(
            st.sampled_from(["consume_all", "receive_all", "receive_to_quarter", "consume_half"]),
            st.integers(-1, 1),
        ),
        st.tuples(st.just("flush"), st.none()),
    ),
    max_size=40,
)
initials = st.one_of(st.integers(-1, 1000), st.sampled_from([MAX_WINDOW, MAX_WINDOW + 1]))

WINDOW_SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def outcome(call: Any) -> tuple[Any, ...]:
    try:
        return ("ok", call())
    except (ValueError, TypeError, mio.FlowControlError) as exc:
        return ("error", type(exc), str(exc))


def send_trace(impl: Impl, initial: int, ops: list[tuple[str, int]]) -> list[Any]:
    made = outcome(lambda: impl.window.SendWindow(initial))
    if made[0] == "error":
        return [made]
    w = made[1]
    trace: list[Any] = []
    for name, n in ops:
        trace.append((outcome(lambda name=name, n=n: getattr(w, name)(n)), w.available))
    return trace


def recv_trace(
    impl: Impl, initial: int, max_window: int | None, ops: list[tuple[str, Any]]
) -> list[Any]:
    made = outcome(lambda: impl.window.RecvWindow(initial, max_window))
    if made[0] == "error":
        return [made]
    r = made[1]
    trace: list[Any] = []
    for name, n in ops:
        if name == "flush":
            result = outcome(r.flush)
        elif name == "consume_all":
            result = outcome(lambda: r.consume(r.buffered))
        elif name == "receive_all":
            result = outcome(lambda n=n: r.receive(max(0, r.available + n)))
        elif name == "receive_to_quarter":
            result = outcome(lambda n=n: r.receive(max(0, r.available - (r.window >> 2) + n)))
        elif name == "consume_half":
            result = outcome(
                lambda n=n: r.consume(min(r.buffered, max(0, (r.window >> 1) - r.pending + n)))
            )
        else:
            result = outcome(lambda name=name, n=n: getattr(r, name)(n))
        state = (r.window, r.max_window, r.available, r.buffered, r.pending)
        assert r.available + r.buffered + r.pending == r.window
        assert r.window <= r.max_window
        trace.append((result, state))
    return trace


@WINDOW_SETTINGS
@given(initial=initials, ops=send_ops)
def test_send_window_differential(both_impls: list[Impl], initial: int, ops: list[Any]) -> None:
    traces = [send_trace(impl, initial, ops) for impl in both_impls]
    for trace in traces[1:]:
        assert trace == traces[0]


@WINDOW_SETTINGS
@given(
    initial=initials,
    max_window=st.one_of(st.none(), st.integers(0, 5000), st.just(MAX_WINDOW + 1)),
    ops=recv_ops,
)
def test_recv_window_differential(
    both_impls: list[Impl], initial: int, max_window: int | None, ops: list[Any]
) -> None:
    traces = [recv_trace(impl, initial, max_window, ops) for impl in both_impls]
    for trace in traces[1:]:
        assert trace == traces[0]
