"""The web server: cheroot, as this archive runs it (HTTP, or HTTPS with our own SSLContext).

Why cheroot, and not waitress any more: waitress reads a whole request body
(to memory or a temp file) before the application runs, so an anonymous
client could make the server buffer ``stow_max_mb`` before anybody asked who
it was. cheroot hands the body to the application as a stream, so the app
authenticates and authorises on the headers and refuses without reading a
byte (issue 9 item 8). It is maintained, pure Python, and speaks TLS through
the standard ssl module with a context we build (dsmpacs.tls).

What this module changes in cheroot, each for a reason a test shows:

- A response sent before the request body was read to its end closes the
  connection (``Connection: close``) instead of reading the rest: cheroot
  would otherwise read and discard the remaining body ("drain") so the
  connection can be kept alive, which is exactly the upload we refused.
- ``Expect: 100-continue`` is answered when the application first reads the
  body, not at once (PEP 3333 allows either): a refused client never gets the
  go-ahead to send.
- A chunked body is read in bounded pieces: cheroot's own reader reads each
  chunk whole into memory, and one chunk may announce gigabytes.
- The TLS handshake runs in a worker thread, not in cheroot's only
  accept/select thread (cheroot issue #748: one client that connects and
  sends nothing stops the whole server for the timeout, a trickling one for
  ever), and a new connection gets a worker only once the client has sent
  its first bytes (until then it waits in the selector, as idle keep-alive
  connections do).
- A request's handshake, request line and headers must arrive within
  ``web_timeout`` in total, not merely one read at a time: a client trickling
  header bytes holds a worker thread for that long at most (see
  docs/security.md, "Slow clients").
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from cheroot import errors, server, wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

log = logging.getLogger(__name__)

# The classes below override cheroot internals (HeaderReader, ChunkedRFile,
# HTTPRequest, HTTPConnection, process_conn), not a public API: an upgrade must
# re-read each of them against the new source and then raise this.
WRITTEN_FOR = "11.1.2"


class ServerVersionError(RuntimeError):
    """cheroot is not the version this module's changes were written against."""


def check_version(version: str | None = None) -> None:
    from importlib.metadata import version as installed

    found = version or installed("cheroot")
    if found != WRITTEN_FOR:
        raise ServerVersionError(
            f"dsmpacs.web.server was written against cheroot {WRITTEN_FOR}, but {found} is "
            f"installed. Install cheroot=={WRITTEN_FOR} (constraints.txt), or re-read this "
            f"module against the new cheroot and raise WRITTEN_FOR.")

# Request line plus headers: generous for cookies and bearer tokens, small enough that
# anonymous clients cannot make the server hold much before the app decides.
MAX_HEADER_BYTES = 64 * 1024
# Largest piece of a chunked body read into memory at once.
CHUNK_PIECE = 1 << 20
_EXPECT_CONTINUE = b"\0expect-continue"     # never a header name from the wire


class _HeaderReader(server.HeaderReader):
    """cheroot answers ``Expect: 100-continue`` as soon as it sees it; hide it from
    cheroot and remember it, so that the go-ahead waits for the first read."""

    def __call__(self, rfile, hdict=None):
        hdict = super().__call__(rfile, hdict)
        if hdict.get(b"Expect", b"").lower() == b"100-continue":
            del hdict[b"Expect"]
            hdict[_EXPECT_CONTINUE] = b"1"
        return hdict


class _ContinueOnRead:
    """wsgi.input that sends ``100 Continue`` before the first read of the body."""

    def __init__(self, rfile, request: "Request"):
        self._rfile, self._request = rfile, request

    def _go_ahead(self) -> None:
        if self._request is not None:
            request, self._request = self._request, None
            if not request.sent_headers:
                request.conn.wfile.write(request.server.protocol.encode("ascii") + b" 100 Continue\r\n\r\n")

    def read(self, size=None):
        self._go_ahead()
        return self._rfile.read(size)

    def readline(self, size=None):
        self._go_ahead()
        return self._rfile.readline(size)

    def readlines(self, sizehint=0):
        self._go_ahead()
        return self._rfile.readlines(sizehint)

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self):
        self._rfile.close()

    def __getattr__(self, name):
        return getattr(self._rfile, name)


class _ChunkedBody(server.ChunkedRFile):
    """A chunked request body, read at most CHUNK_PIECE bytes of a chunk at a time."""

    def __init__(self, rfile, maxlen):
        super().__init__(rfile, maxlen)
        self._left = 0          # bytes of the current chunk not read yet

    def _fetch(self):
        if self.closed:
            return
        if self._left == 0:
            line = self.rfile.readline(1024)
            self.bytes_read += len(line)
            if not line.endswith(b"\r\n"):
                raise ValueError("bad chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ValueError(f"bad chunk size {line[:40]!r}") from None
            if size <= 0:
                self.closed = True
                return
            if self.maxlen and self.bytes_read + size > self.maxlen:
                raise errors.MaxSizeExceeded("Request Entity Too Large", self.maxlen)
            self._left = size
        piece = self.rfile.read(min(self._left, CHUNK_PIECE))
        if not piece:
            raise ValueError("body ended inside a chunk")
        self._left -= len(piece)
        self.bytes_read += len(piece)
        self.buffer += piece
        if self._left == 0 and self.rfile.read(2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")

    def finished(self) -> bool:
        return self.closed


class Request(server.HTTPRequest):
    header_reader = _HeaderReader()

    def parse_request(self):
        try:
            super().parse_request()
        finally:
            self.conn.headers_done()

    def respond(self):
        # cheroot's respond(), with our body readers (see the module docstring).
        expect = self.inheaders.pop(_EXPECT_CONTINUE, None)
        limit = self.server.max_request_body_size
        if self.chunked_read:
            self.rfile = _ChunkedBody(self.conn.rfile, limit)
        else:
            length = int(self.inheaders.get(b"Content-Length", 0))
            if limit and length > limit:
                if not self.sent_headers:
                    self.simple_response("413 Request Entity Too Large",
                                         "The request body exceeds the largest upload allowed.")
                return
            self.rfile = server.KnownLengthRFile(self.conn.rfile, length)
        if expect:
            self.rfile = _ContinueOnRead(self.rfile, self)
        self.server.gateway(self).respond()
        self.ready and self.ensure_headers_sent()
        if self.chunked_write:
            self.conn.wfile.write(b"0\r\n\r\n")

    def _body_left(self) -> bool:
        rfile = getattr(self, "rfile", None)
        if isinstance(rfile, _ContinueOnRead):
            rfile = rfile._rfile
        if isinstance(rfile, server.KnownLengthRFile):
            return rfile.remaining > 0
        if isinstance(rfile, _ChunkedBody):
            return not rfile.finished()
        return False

    def send_headers(self):
        # Answered before the body was read (refused, or an error): close instead of
        # letting cheroot read the rest of an upload nobody wants.
        if self._body_left():
            self.close_connection = True
            if not any(k.lower() == b"connection" for k, _ in self.outheaders):
                self.outheaders.append((b"Connection", b"close"))
        elif any(k.lower() == b"connection" and v.lower() == b"close" for k, v in self.outheaders):
            self.close_connection = True
        super().send_headers()


class Connection(server.HTTPConnection):
    RequestHandlerClass = Request

    def __init__(self, srv, sock, makefile=server.MakeFile):
        super().__init__(srv, sock, makefile)
        self.handshake_pending = isinstance(sock, ssl.SSLSocket)
        self.fresh = True

    def communicate(self):
        self.server.watchdog.start(self)
        if self.handshake_pending:
            self.handshake_pending = False
            if not self._handshake():
                self.server.watchdog.done(self)
                return False
        return super().communicate()

    def headers_done(self) -> None:
        self.server.watchdog.done(self)

    def _handshake(self) -> bool:
        sock = self.socket
        try:
            sock.do_handshake()
        except ssl.SSLError as exc:
            if "http request" in str(exc).lower():
                # Plain HTTP on the HTTPS port: say so in plain text, then close.
                msg = b"This server speaks HTTPS on this port.\r\n"
                try:
                    socket.socket.sendall(sock, b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                                          b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(msg), msg))
                except OSError:
                    pass
            log.info("TLS handshake with %s failed: %s", self.remote_addr, exc)
            return False
        except OSError as exc:         # timeout, reset
            log.info("TLS handshake with %s failed: %s", self.remote_addr, exc)
            return False
        self.ssl_env = self.server.ssl_adapter.get_environ(sock)
        return True


class TLSAdapter(BuiltinSSLAdapter):
    """cheroot's builtin adapter with our SSLContext, and the handshake left to the
    worker thread that serves the connection (Connection._handshake)."""

    def __init__(self, context: ssl.SSLContext):
        # Not BuiltinSSLAdapter.__init__: it loads certificate files into a context of
        # its own; ours comes from dsmpacs.tls, already loaded.
        self.certificate = self.private_key = self.certificate_chain = None
        self.ciphers = self.private_key_password = None
        self._server_env = {}
        self.context = context

    def wrap(self, sock):
        s = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return s, {}


class Watchdog:
    """Closes connections whose handshake, request line and headers are not all in
    within ``limit`` seconds (cheroot's own timeout applies to each read alone)."""

    def __init__(self, limit: float):
        self.limit = limit
        self._lock = threading.Lock()
        self._reading: dict[Connection, float] = {}
        self._stop = threading.Event()
        self.cut = 0                # connections closed for being too slow (tests read it)

    def start(self, conn: Connection) -> None:
        with self._lock:
            self._reading[conn] = time.monotonic() + self.limit

    def done(self, conn: Connection) -> None:
        with self._lock:
            self._reading.pop(conn, None)

    def run(self) -> None:
        while not self._stop.wait(min(1.0, self.limit / 4)):
            now = time.monotonic()
            with self._lock:
                late = [c for c, deadline in self._reading.items() if deadline < now]
                for conn in late:
                    del self._reading[conn]
            for conn in late:
                log.info("closing the connection from %s: request headers not in within %.0f s",
                         conn.remote_addr, self.limit)
                self.cut += 1
                try:
                    # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would
                    # change the TLS state under the worker reading it. The worker's read
                    # then ends and cheroot closes the connection.
                    socket.socket.shutdown(conn.socket, socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()


class Server(wsgi.Server):
    ConnectionClass = Connection

    def process_conn(self, conn):
        # A new connection waits in cheroot's selector, like an idle keep-alive one, until
        # the client sends something: one that connects and says nothing costs a file
        # descriptor until web_timeout, not a worker thread.
        if getattr(conn, "fresh", False):
            conn.fresh = False
            self._connections.put(conn)
            return
        super().process_conn(conn)

    def error_log(self, msg="", level=logging.INFO, traceback=False):
        # cheroot writes to stderr; ours goes to the web process's log like everything else.
        log.log(level, "%s", msg, exc_info=traceback)

    def prepare(self):
        super().prepare()
        threading.Thread(target=self.watchdog.run, name="web-header-watchdog", daemon=True).start()

    def stop(self):
        self.watchdog.stop()
        super().stop()


def build(app, settings, context: ssl.SSLContext | None = None) -> Server:
    """The web server for ``app`` on web_host:web_port, HTTPS when ``context`` is given.
    Call ``prepare()`` to bind, then ``serve()``; ``stop()`` from another thread."""
    check_version()
    srv = Server((settings.web_host, settings.web_port), app, numthreads=settings.web_threads,
                 server_name="dsmpacs", timeout=settings.web_timeout,
                 request_queue_size=64,
                 # New connections wait for a free worker in this queue; when it is full
                 # they get 503 at once instead of stalling cheroot's accept thread.
                 accepted_queue_size=settings.web_threads * 16, accepted_queue_timeout=0.1,
                 shutdown_timeout=5)
    srv.max_request_header_size = MAX_HEADER_BYTES
    # STOW-RS is the largest body; a few MiB more for the multipart framing.
    srv.max_request_body_size = (settings.stow_max_mb + 1) * 2**20
    srv.watchdog = Watchdog(settings.web_timeout)
    if context is not None:
        srv.ssl_adapter = TLSAdapter(context)
    return srv
