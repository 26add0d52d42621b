"""Cloudflare's response heads read without the `email` package.

http.client parses every response's header lines with the `email` package's feed
parser, which is built for MIME mail (folded lines, multipart bodies, defects): in
profiles of the gateway it is the largest single piece of an upstream call after the
system calls. Cloudflare's heads are plain `Name: value` lines. `FastHTTPResponse`
reads those into the same `http.client.HTTPMessage` the email parser builds (same
names, same values, same order), and hands any head holding something else (a folded
line, a line that is not a header) to the email parser exactly as http.client does.
Everything after the headers (chunked or sized body, keep-alive) is http.client's own.
"""
import http.client
import re

# A header name as the email parser takes one: printable ASCII other than the colon.
_NAME = re.compile(r"[\041-\071\073-\176]+")


def parse_headers(fp):
    """The header lines after the status line of `fp`, as http.client's HTTPMessage."""
    lines = http.client._read_headers(fp)  # limits and errors as http.client's own
    message = http.client.HTTPMessage()
    for line in lines:
        if line in (b"\r\n", b"\n", b""):
            break
        text = line.decode("iso-8859-1")
        name, colon, value = text.partition(":")
        if not colon or not _NAME.fullmatch(name):
            return _email_parsed(lines)
        message[name] = value.lstrip(" \t").rstrip("\r\n")
    return message


def _email_parsed(lines):
    """What http.client.parse_headers makes of these lines (folded or odd heads)."""
    import email.parser

    text = b"".join(lines).decode("iso-8859-1")
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)


class FastHTTPResponse(http.client.HTTPResponse):
    """http.client's response with `parse_headers` above; the rest is `begin()` as is."""

    def begin(self):
        if self.headers is not None:
            return
        while True:  # skip any 100 Continue
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_headers(self.fp)
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
                or 100 <= status < 200 or self._method == "HEAD"):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True
