"""The pipe protocol: frames survive any split, and bad bytes are typed errors, never crashes."""

from __future__ import annotations

import pickle
import socket
import struct

import anyio
import pytest

from aiotimer.process import ProtocolError
from aiotimer.process._channel import Channel
from aiotimer.process._protocol import (
    HEADER,
    MAGIC,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    FrameDecoder,
    Msg,
    encode,
    hello_mismatch,
)


def frames_of(decoder: FrameDecoder) -> list[tuple[Msg, object]]:
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


def test_a_frame_is_a_header_then_a_pickle() -> None:
    data = encode(Msg.USER, {"a": 1})
    magic, kind, length = HEADER.unpack_from(data)
    assert (magic, kind, length) == (MAGIC, Msg.USER, len(data) - HEADER.size)
    assert pickle.loads(data[HEADER.size :]) == {"a": 1}


def test_a_hello_of_another_protocol_version_is_an_unrecoverable_error() -> None:
    ours = {"version": PROTOCOL_VERSION, "pid": 1}
    assert hello_mismatch(ours, "the worker", "the parent") is None
    assert hello_mismatch(PROTOCOL_VERSION, "the worker", "the parent") is None
    error = hello_mismatch({"version": 99}, "the worker", "the parent")
    assert error is not None
    assert not error.resync
    assert str(error) == f"the worker speaks protocol version 99, the parent {PROTOCOL_VERSION}"
    assert hello_mismatch("garbage", "the parent", "this worker") is not None


def test_a_none_payload_is_sent_as_an_empty_frame() -> None:
    assert encode(Msg.HEARTBEAT) == HEADER.pack(MAGIC, Msg.HEARTBEAT, 0)
    decoder = FrameDecoder()
    decoder.feed(encode(Msg.HEARTBEAT))
    assert frames_of(decoder) == [(Msg.HEARTBEAT, None)]


def test_frames_split_byte_by_byte_decode_whole() -> None:
    objects = [("tick", i, "x" * i) for i in range(20)]
    stream = b"".join(encode(Msg.USER, obj) for obj in objects)
    decoder = FrameDecoder()
    got = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        got.extend(frames_of(decoder))
    assert got == [(Msg.USER, obj) for obj in objects]
    assert decoder.pending == 0


def test_many_frames_in_one_read_decode_in_order() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode(Msg.READY) + encode(Msg.STATS, {"n": 1}) + encode(Msg.USER, 2)[:5])
    assert frames_of(decoder) == [(Msg.READY, None), (Msg.STATS, {"n": 1})]
    decoder.feed(encode(Msg.USER, 2)[5:])
    assert frames_of(decoder) == [(Msg.USER, 2)]


def test_an_unknown_kind_is_skipped_and_the_stream_goes_on() -> None:
    decoder = FrameDecoder()
    decoder.feed(HEADER.pack(MAGIC, 200, 3) + b"abc" + encode(Msg.USER, "after"))
    with pytest.raises(ProtocolError, match="unknown frame kind 200") as info:
        decoder.next_frame()
    assert info.value.resync
    assert frames_of(decoder) == [(Msg.USER, "after")]


def test_a_payload_that_does_not_unpickle_is_skipped_and_the_stream_goes_on() -> None:
    decoder = FrameDecoder()
    decoder.feed(HEADER.pack(MAGIC, Msg.USER, 4) + b"\x80\x05junk"[:4] + encode(Msg.USER, 7))
    with pytest.raises(ProtocolError, match="USER frame of 4 bytes does not unpickle") as info:
        decoder.next_frame()
    assert info.value.resync
    assert frames_of(decoder) == [(Msg.USER, 7)]


def test_bad_magic_loses_the_stream_for_good() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"this is not a frame" + encode(Msg.USER, 1))
    with pytest.raises(ProtocolError, match="bad frame magic b'th'") as info:
        decoder.next_frame()
    assert not info.value.resync
    with pytest.raises(ProtocolError):  # nothing after it can be trusted
        decoder.next_frame()


def test_an_absurd_length_loses_the_stream() -> None:
    decoder = FrameDecoder()
    decoder.feed(HEADER.pack(MAGIC, Msg.USER, MAX_PAYLOAD + 1))
    with pytest.raises(ProtocolError, match="above the maximum") as info:
        decoder.next_frame()
    assert not info.value.resync


def test_encoding_what_does_not_pickle_names_its_type() -> None:
    with pytest.raises(TypeError, match=r"cannot send a function .*does not pickle"):
        encode(Msg.USER, lambda: None)


# -- the channel over a real socketpair, on every backend ------------------------------------


@pytest.mark.anyio
async def test_channel_delivers_every_frame_then_reports_end_of_file() -> None:
    left_sock, right_sock = socket.socketpair()
    got: list[tuple[Msg, object]] = []
    errors: list[ProtocolError] = []
    left = Channel(left_sock, lambda kind, obj: got.append((kind, obj)), errors.append, "left")
    right = Channel(right_sock, lambda kind, obj: None, errors.append, "right")
    big = b"x" * (3 * 1024 * 1024)  # more than a socket buffer: written in pieces

    async def write_then_close() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(right.run)
            right.send(Msg.USER, "small")
            right.send(Msg.USER, big)
            right.send_raw(HEADER.pack(MAGIC, 99, 0))
            right.send(Msg.USER, "last")
            await right.drain()
            tg.cancel_scope.cancel()
        right.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(write_then_close)
        with anyio.fail_after(5):
            await left.run()  # returns at the end of file
    assert left.eof
    left.close()
    assert got == [(Msg.USER, "small"), (Msg.USER, big), (Msg.USER, "last")]
    assert [e.resync for e in errors] == [True]


@pytest.mark.anyio
async def test_channel_stops_reading_a_stream_out_of_step() -> None:
    left_sock, right_sock = socket.socketpair()
    got: list[object] = []
    errors: list[ProtocolError] = []
    left = Channel(left_sock, lambda k, o: got.append(o), errors.append, "left")
    right_sock.sendall(encode(Msg.USER, 1) + b"garbage garbage" + encode(Msg.USER, 2))
    with anyio.fail_after(5):
        await left.run()  # returns by itself: the stream is lost
    assert got == [1]
    assert left.broken is not None
    assert not left.open
    assert len(errors) == 1
    assert not errors[0].resync
    left.close()
    right_sock.close()


def test_header_layout_is_seven_bytes_big_endian() -> None:
    assert HEADER.size == 7
    assert HEADER.pack(MAGIC, 8, 258) == MAGIC + b"\x08" + struct.pack(">I", 258)
