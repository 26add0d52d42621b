"""One timer per stream for the upstream reads under gevent (gateway/cloudflare/timed_read.py).

Real gevent sockets (a socketpair) and gevent's hub, as in a gunicorn worker: bytes
already there or arriving later are returned, silence ends in TimeoutError no later
than asked (the deadlines are generous: the machine may be busy), reads that find
data keep the stream's one timer, and the socket gets its timeout back.
"""
import time

import gevent
import pytest
from gevent import socket

from gateway.cloudflare.timed_read import TimedReader, usable


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def test_bytes_already_there_and_bytes_arriving_later(pair):
    ours, theirs = pair
    reader = TimedReader(ours)
    theirs.sendall(b"data: 1\n\n")
    assert reader.recv(1024, 5.0) == b"data: 1\n\n"
    later = gevent.spawn_later(0.05, theirs.sendall, b"data: 2\n\n")
    assert reader.recv(1024, 5.0) == b"data: 2\n\n"
    later.join()
    theirs.close()
    assert reader.recv(1024, 5.0) == b""  # the peer closed
    reader.close()


def test_reads_with_data_keep_the_one_timer(pair):
    ours, theirs = pair
    reader = TimedReader(ours)
    timers = set()
    for n in range(20):
        gevent.spawn_later(0.002, theirs.sendall, b"event %d\n" % n)
        assert reader.recv(1024, 1.0) == b"event %d\n" % n
        timers.add(id(reader.timer))
    assert len(timers) == 1
    reader.close()


def test_a_stream_that_keeps_coming_is_never_timed_out(pair):
    """Events every 30 ms for 0.6 s with a 0.2 s timeout: the timer re-arms, no wake-up."""
    ours, theirs = pair
    reader = TimedReader(ours)
    writer = gevent.spawn(lambda: [gevent.sleep(0.03) or theirs.sendall(b"e") for _ in range(20)])
    got = b""
    while len(got) < 20:
        got += reader.recv(1024, 0.2)
    writer.join()
    assert got == b"e" * 20
    reader.close()


def test_silence_ends_no_later_than_asked(pair):
    ours, _ = pair
    reader = TimedReader(ours)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        reader.recv(1024, 0.1)
    assert 0.05 <= time.monotonic() - started < 3.0
    # A shorter timeout than the armed one re-arms: not a 30 s wait.
    reader._arm(30.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        reader.recv(1024, 0.1)
    assert time.monotonic() - started < 3.0
    reader.close()


def test_close_gives_the_socket_its_timeout_back(pair):
    ours, _ = pair
    ours.settimeout(7.0)
    reader = TimedReader(ours)
    assert ours.gettimeout() == 0.0
    reader.close()
    assert ours.gettimeout() == 7.0


def test_only_gevent_sockets_are_used():
    import socket as plain

    ours, theirs = plain.socketpair()
    try:
        assert not usable(ours)
    finally:
        ours.close()
        theirs.close()
    gevent_ours, gevent_theirs = socket.socketpair()
    try:
        assert usable(gevent_ours)
    finally:
        gevent_ours.close()
        gevent_theirs.close()
