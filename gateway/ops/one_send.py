"""gunicorn's response writer with the head and the first body bytes in one `send()`.

gunicorn writes a response's status line and headers in one `send()` and each body
piece in another. A non-stream answer is one body piece, so every request paid two
send syscalls to the client, and on a loopback or LAN connection a `send()` is mostly
the kernel waking the reader: in bench/ profiles of 50 non-stream clients the header
`send()` alone was 15% of a worker's samples. Here the head waits, inside one
`write()`, for the body bytes of that same call and goes out with them; a stream's
head goes out with its first event. Nothing is held back beyond the `write()` that
produced it (a body-less response, a HEAD or an empty piece still sends the head at
once), so streams are not delayed and the byte stream on the wire is unchanged.

Every piece, and the chunked framing's last chunk, leaves through
`gateway.ops.fast_send.sendall` (one system call, where gevent's `sendall` makes two).

`install()` runs in each gunicorn worker (gunicorn.conf.py, post_worker_init), after
gevent has patched it; gunicorn builds every HTTP/1.1 response from
`gunicorn.http.wsgi.Response`, whose `_emit_body` is its documented hook for framing.
"""
from gunicorn.http import wsgi

from gateway.ops.fast_send import sendall


class OneSendResponse(wsgi.Response):
    """A gunicorn Response whose head rides with the body bytes of the same write()."""

    _holding = False  # inside write(): the head may wait for the body bytes
    _head = b""

    def send_headers(self):
        if self.headers_sent or not self._holding:
            return super().send_headers()
        head = self.default_headers()
        head.extend([f"{name}: {value}\r\n" for name, value in self.headers])
        self._head = ("".join(head) + "\r\n").encode("latin-1")
        self.headers_sent = True
        return None

    def write(self, arg):
        if self.headers_sent and not self._head:  # a stream's later events
            if self.chunked and type(arg) is bytes and arg:
                # gunicorn's write() for a chunked body, less its checks that cannot apply
                # here (a chunked response has no length to cap, a body-less one is never
                # chunked): one framing and one send() per event.
                self.sent += len(arg)
                sendall(self.sock, b"%X\r\n%s\r\n" % (len(arg), arg))
                return None
            return super().write(arg)
        self._holding = True
        try:
            super().write(arg)
        finally:
            self._holding = False
            self._send_head()  # no body bytes went out with it (empty piece, HEAD, 204, error)

    def _emit_body(self, data):
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        head, self._head = self._head, b""
        sendall(self.sock, head + data if head else data)

    def _send_head(self):
        head, self._head = self._head, b""
        if head:
            sendall(self.sock, head)

    def close(self):
        if self.headers_sent and self.chunked:
            sendall(self.sock, b"0\r\n\r\n")  # the last chunk (gunicorn: util.write_chunk)
            return
        super().close()


def install():
    """Make gunicorn build this worker's HTTP/1.1 responses with OneSendResponse."""
    wsgi.Response = OneSendResponse
