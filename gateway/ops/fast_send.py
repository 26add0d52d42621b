"""`sendall` on a gevent socket in one system call when the kernel takes it all.

gevent's `socket.sendall` asks the kernel for the socket's send buffer size (a
`getsockopt(SO_SNDBUF)` system call, to size the pieces of a large write) on every
call before it sends anything, then goes through three Python layers to the one
`send()` that nearly always takes everything: a relayed stream event or a small
answer is far below any send buffer. So every client write and every upstream
request paid two system calls. `sendall` here makes the `send()` first and leaves to
gevent only what the kernel did not take.
"""
from gevent.socket import socket as GeventSocket


def sendall(sock, data):
    """`sock.sendall(data)`, first trying one plain `send()` on a gevent socket.

    A gevent socket wraps a non-blocking system socket (`_sock`): gevent's own `send`
    tries exactly that call first too. Whatever it could not take (a full send buffer)
    goes through gevent's `sendall`, which waits for the socket cooperatively, so a slow
    client blocks only its own greenlet, as before. TLS sockets and anything else go
    straight to their own `sendall`.
    """
    if type(sock) is GeventSocket:
        try:
            sent = sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    sock.sendall(data)
