"""Read an upstream stream's body in the relaying greenlet, straight from its socket.

Handing every event from a reader greenlet to the relay through a queue, and decoding
the chunked framing in http.client, cost about a third of a worker's CPU per event
under load (bench/). Once urllib3 has read the headers, `SocketBody` takes the socket
and reads it with a timeout per read: a timeout consumes nothing, so the relay can
send heartbeats, check the client and keep its deadlines without a second greenlet.
After a complete body the connection goes back to the pool (keep-alive to Cloudflare).
Responses without a real socket (test doubles, compressed bodies) use `ResponseBody`.
"""
import logging
import re
import ssl
import time

from gateway.cloudflare import timed_read

log = logging.getLogger(__name__)

READ_SIZE = 65536
# Leading zeros are allowed (HTTP puts no limit on them); the value itself stays below 16**16.
HEX_SIZE = re.compile(rb"0*[0-9A-Fa-f]{1,16}")
MAX_SIZE_LINE = 1024


class BodyFormatError(ValueError):
    """The upstream framing is broken (a bad chunk size, a missing CRLF)."""


class ChunkedDecoder:
    """Incremental HTTP/1.1 chunked transfer decoding: framed bytes in, body bytes out."""

    def __init__(self):
        self._buffer = b""
        self._left = None  # bytes left in the current chunk; None while reading a size line
        self._crlf = False  # the CRLF after a chunk's data is due
        self._trailer = False  # after the last (zero) chunk, until the blank line
        self.done = False

    def feed(self, data):
        """Body bytes completed by `data`."""
        buffer = self._buffer + data if self._buffer else data
        out = []
        pos = 0
        while pos < len(buffer) and not self.done:
            if self._left:  # a positive count: _chunk_size never returns a negative one
                piece = buffer[pos:pos + self._left]
                out.append(piece)
                pos += len(piece)
                self._left -= len(piece)
                self._crlf = self._left == 0
                continue
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                if len(buffer) - pos > MAX_SIZE_LINE:
                    raise BodyFormatError("chunk size line too long")
                break
            line = buffer[pos:end]
            pos = end + 2
            if self._crlf:
                if line:
                    raise BodyFormatError("missing CRLF after chunk data")
                self._crlf = False
            elif self._trailer:
                self.done = not line
            else:
                self._left = _chunk_size(line)
                self._trailer = self._left == 0
        self._buffer = buffer[pos:]
        return b"".join(out)


def _chunk_size(line):
    size = line.split(b";", 1)[0].strip()
    if not HEX_SIZE.fullmatch(size):  # int(..., 16) would also take "-1", "+5", "0x5"
        raise BodyFormatError("bad chunk size")
    return int(size, 16)


class SocketBody:
    """The body of an open urllib3 response, read from its socket by the caller."""

    def __init__(self, response):
        raw = response.raw
        self.response = response
        self.http = raw._fp  # http.client's response: it parsed the status and headers
        self.sock = raw._connection.sock
        if self.sock is None or self.http is None or self.http.fp is None:
            raise LookupError("no socket")
        self.chunked = ChunkedDecoder() if self.http.chunked else None
        self.left = self.http.length  # for a Content-Length body; None: until EOF
        self.complete = self.left == 0
        self._pending = self._already_buffered()
        # From here on the socket is read directly: free http.client's 8 KiB read buffer
        # now, not when the stream ends, as its own close does (the socket stays open).
        reader, self.http.fp = self.http.fp, None
        reader.close()
        self.reader = timed_read.TimedReader(self.sock) if timed_read.usable(self.sock) else None

    def _already_buffered(self):
        """Body bytes http.client read past the headers, without waiting for more."""
        previous = self.sock.gettimeout()
        self.sock.settimeout(0.0)
        try:
            return self.http.fp.read1(READ_SIZE) or b""
        except (BlockingIOError, ssl.SSLWantReadError):
            return b""
        finally:
            self.sock.settimeout(previous)

    def read(self, timeout):
        """Body bytes, maybe none (framing only; see `complete` for the end).

        Raises socket.timeout when nothing came within `timeout` seconds: a timed-out
        read consumed nothing, so reading can simply go on afterwards.
        """
        if self.complete:
            return b""
        data, self._pending = self._pending, b""
        if not data:
            if self.reader is not None:
                data = self.reader.recv(READ_SIZE, timeout)
            else:
                self.sock.settimeout(max(timeout, 0.001))
                data = self.sock.recv(READ_SIZE)
            if not data:
                if self.chunked is not None or self.left:
                    raise ConnectionResetError("upstream closed the connection mid-body")
                self.complete = True
                return b""
        return self._unframe(data)

    def _unframe(self, data):
        if self.chunked is not None:
            body = self.chunked.feed(data)
            self.complete = self.chunked.done
            return body
        if self.left is not None:
            data = data[:self.left]
            self.left -= len(data)
            self.complete = self.left == 0
        return data

    def release(self, finished, drain_timeout):
        """Return the connection to the pool after a complete body, else close it."""
        if finished and not self.complete and not self.http.will_close:
            # After [DONE] only the body's last chunk is due; it usually came with it.
            give_up = time.monotonic() + drain_timeout
            try:
                while not self.complete and time.monotonic() < give_up:
                    try:
                        self.read(give_up - time.monotonic())
                    except TimeoutError:
                        pass  # maybe the stream's timer, armed before: the loop checks the time
            except (OSError, BodyFormatError):
                pass
        if self.reader is not None:
            self.reader.close()
        if self.complete and not self.http.will_close:
            self.http.close()  # closes http.client's reader only; the socket stays open
            self.response.raw.release_conn()
        self.response.close()


class ResponseBody:
    """Fallback for responses without a usable socket: urllib3's own (blocking) reads."""

    def __init__(self, response):
        self.response = response
        self.complete = False

    def read(self, timeout):
        data = self.response.raw.read1(READ_SIZE, decode_content=True)
        self.complete = not data
        return data

    def release(self, finished, drain_timeout):
        self.response.close()


def open_body(response):
    """The best reader for an open streamed response.

    `SocketBody` reads private attributes of urllib3 (`_fp`, `_connection`) and http.client
    (`chunked`, `length`, `will_close`, `fp`). tests/test_cloudflare_body.py fails loudly
    when an upgrade changes them; in production the relay falls back to urllib3's own
    reads and says so in the log.
    """
    if response.headers.get("Content-Encoding", "identity").lower() == "identity":
        try:
            return SocketBody(response)
        except AttributeError as exc:
            if hasattr(response.raw, "_connection"):  # a real urllib3 response, not a double
                log.warning("cannot read the upstream socket directly (%s): urllib3 or "
                            "http.client internals changed; using urllib3's reads", exc)
        except LookupError:
            pass
    return ResponseBody(response)
