"""A minimal incremental HTTP/1.x response reader for the lean HTTP probe (pure).

It understands what a health check needs: the status line, headers, and a
body delimited by Content-Length, chunked transfer coding, or the close of
the connection, capped at BODY_CAP. Anything else is a protocol error.

Every buffer is capped, whatever the peer declares: the head at HEAD_CAP, a
chunk-size line at LINE_CAP, the body at BODY_CAP. Chunk data is taken as it
arrives rather than once a whole chunk is in (a chunk declared as 1 TB used
to be buffered until it was complete: memory grew as fast as the backend
could send). So `buffered` never exceeds the caps plus one read.
"""

from __future__ import annotations

import re

from sentinel.errors import NoResponse, ProtocolError

BODY_CAP = 64 * 1024
HEAD_CAP = 64 * 1024
LINE_CAP = 4096  # a chunk-size line, extensions included
_SIZE_LINE, _CHUNK_END = -1, -2  # chunked states: a size line, the CRLF after the data
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?")


class ResponseReader:
    """Feed bytes in; `done` once the status (and, when wanted, the body) is known."""

    __slots__ = ("_buf", "_chunk_left", "_chunked", "_length", "_scanned", "body", "done",
                 "status", "want_body")

    def __init__(self, want_body: bool) -> None:
        self.want_body = want_body
        self.status = 0
        self.body = bytearray()
        self.done = False
        self._buf = bytearray()
        self._length: int | None = None  # Content-Length, when given
        self._chunked = False
        self._chunk_left = _SIZE_LINE  # chunked: data bytes left, or one of the states
        self._scanned = 0  # head bytes already searched for its end

    @property
    def buffered(self) -> int:
        """Bytes held: undigested input plus the body kept (bounded by the caps)."""
        return len(self._buf) + len(self.body)

    def feed(self, data: bytes) -> None:
        """Take the next bytes from the connection."""
        self._buf += data
        if not self.status:
            self._head()
        if self.status and not self.done:
            self._body()

    def eof(self) -> None:
        """The peer closed: fine for a close-delimited body, an error otherwise."""
        if self.done:
            return
        if not self.status:
            if not self._buf:
                raise NoResponse("server closed the connection without a response")
            raise ProtocolError("connection closed mid-headers")
        if self._length is None and not self._chunked:
            self.done = True
            return
        raise ProtocolError("connection closed mid-body")

    def _head(self) -> None:
        # Resume the search where the last one ended: a head trickled a byte at a time
        # is scanned once, not once per byte.
        end = self._buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            self._scanned = len(self._buf)
            if len(self._buf) > HEAD_CAP:
                raise ProtocolError(f"no end of headers in {HEAD_CAP} bytes")
            if len(self._buf) >= 5 and not self._buf.startswith(b"HTTP/"):
                raise ProtocolError(f"not an HTTP response: {bytes(self._buf[:32])!r}")
            return
        lines = bytes(self._buf[:end]).split(b"\r\n")
        m = _STATUS.fullmatch(lines[0])
        if not m:
            raise ProtocolError(f"bad status line: {lines[0][:64]!r}")
        del self._buf[: end + 4]
        self.status = int(m.group(1))
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if len(name) < 14:  # shorter than both names sought: most lines (Date, Server)
                continue
            key = name.strip().lower()
            if key == b"content-length":
                try:
                    self._length = int(value.strip())
                except ValueError:
                    raise ProtocolError(f"bad Content-Length: {value.strip()!r}") from None
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
        no_body = self.status in (204, 304) or 100 <= self.status < 200
        if not self.want_body or no_body or self._length == 0:
            self.done = True

    def _body(self) -> None:
        if self._chunked:
            self._dechunk()
        else:
            self._take(len(self._buf) if self._length is None else self._length - len(self.body))
            if self._length is not None and len(self.body) >= self._length:
                self.done = True
        if len(self.body) >= BODY_CAP:
            self.done = True

    def _take(self, n: int) -> None:
        piece = self._buf[:n]
        del self._buf[:n]
        self.body += piece[: max(0, BODY_CAP - len(self.body))]

    def _dechunk(self) -> None:
        buf = self._buf
        while buf and len(self.body) < BODY_CAP:
            if self._chunk_left == _SIZE_LINE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > LINE_CAP:
                        raise ProtocolError(f"no end of chunk size line in {LINE_CAP} bytes")
                    return
                size = bytes(buf[:end]).split(b";")[0].strip()
                try:
                    if len(size) > 16:  # more than 2**64 bytes: not a size, an attack
                        raise ValueError
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size: {size[:16]!r}") from None
                del buf[: end + 2]
                if self._chunk_left == 0:
                    self.done = True  # trailers are not needed
                    return
            elif self._chunk_left == _CHUNK_END:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise ProtocolError("chunk data longer than its size")
                del buf[:2]
                self._chunk_left = _SIZE_LINE
            else:  # data: taken as it comes, never held until the whole chunk is in
                n = min(len(buf), self._chunk_left)
                self._take(n)
                self._chunk_left -= n
                if not self._chunk_left:
                    self._chunk_left = _CHUNK_END
