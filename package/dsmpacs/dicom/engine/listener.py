"""The DICOM listener, with a cap on concurrent connections per peer address.

pynetdicom's ``max_associations`` counts every association, so one host (a
misconfigured modality retrying in a loop, a scanner) can take every slot and
keep the rest of the hospital out. ``ae.make_server(server_class=...)`` is
pynetdicom's hook for the listener; ours counts connections per IP address
from the TCP accept (socketserver's ``verify_request``, before any thread is
started for it) until the association thread ends, and closes a connection
over the cap at once. Refusing at accept costs nothing; answering with an
A-ASSOCIATE-RJ would mean waiting for the peer's request on a thread, which is
what a flood would exploit.

A TLS listener is the same class given a ``tls_context``: each connection's
handshake runs on its own thread (engine/tls.py), after the cap was applied.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime

from pynetdicom import evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from dsmpacs.dicom.engine import tls

log = logging.getLogger(__name__)
REFUSAL_LOG_INTERVAL = 10.0     # seconds between log lines for one refused address


class _CountedRequestHandler(RequestHandler):
    """pynetdicom's handler, releasing the address's count when the association ends."""

    def handle(self) -> None:
        server: CappedAssociationServer = self.server     # type: ignore[assignment]
        address = self.client_address
        try:
            opened = server.opened_at(address)
            if server.tls_context is not None:
                # On this connection's own thread, never the accept loop's (engine/tls.py).
                seconds = float(server.ae.acse_timeout or 30)
                try:
                    self.request = tls.handshake(self.request, server.tls_context,
                                                 opened + seconds, seconds)
                except tls.HandshakeRefused as exc:
                    server.refuse_tls(address, str(exc))
                    server.ended(address)
                    return
            assoc = self._create_association()
            # The A-ASSOCIATE-RQ deadline (engine/transport.py) counts from the accept,
            # so the handshake's time is not given twice.
            assoc.dul.socket._dsmpacs_opened = opened
            run = assoc.run

            def run_then_release() -> None:
                try:
                    run()
                finally:
                    server.ended(address)

            assoc.run = run_then_release      # Thread.start() calls self.run
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": address})
            assoc.start()
        except BaseException:
            server.ended(address)
            raise


class CappedAssociationServer(ThreadedAssociationServer):
    """A ThreadedAssociationServer refusing more than ``per_address`` concurrent
    connections from one IP address."""

    # socketserver listens with a backlog of 5: a burst of connections (modalities
    # starting their queues, or a flood) beyond it has SYNs dropped and retried by
    # the clients after 1 s, 3 s, 7 s... before we even see them.
    request_queue_size = 128

    # The DICOM daemon's receiving processes (dicom/receivers.py), when it has any:
    # ``hand(server, request, client_address)`` passes an accepted connection to one
    # of them and says whether it did; ``local_ended()`` hears that one served here ended.
    dispatcher = None

    def __init__(self, *args, per_address: int, tls_context=None, on_tls_refused=None, **kwargs):
        self.per_address = per_address
        # Not pynetdicom's ssl_context: that one handshakes on the accept thread.
        self.tls_context = tls_context
        self.on_tls_refused = on_tls_refused
        self._counts: Counter[str] = Counter()
        self._refused: dict[str, tuple[float, int]] = {}
        self._count_lock = threading.Lock()
        super().__init__(*args, request_handler=_CountedRequestHandler, **kwargs)

    def verify_request(self, request, client_address) -> bool:
        host = client_address[0]
        with self._count_lock:
            if self._counts[host] < self.per_address:
                self._counts[host] += 1
                return True
            last, suppressed = self._refused.get(host, (0.0, 0))
            now = time.monotonic()
            if now - last < REFUSAL_LOG_INTERVAL:
                self._refused[host] = (last, suppressed + 1)
                return False
            self._refused[host] = (now, 0)
        more = f" ({suppressed} more refused since the last line)" if suppressed else ""
        log.warning("refusing a connection from %s: %d connections from that address already "
                    "(max_associations_per_address)%s", host, self.per_address, more)
        return False        # socketserver closes the socket

    def process_request(self, request, client_address) -> None:
        dispatcher = self.dispatcher
        try:
            if dispatcher is not None and dispatcher.hand(self, request, client_address):
                return
            super().process_request(request, client_address)
        except BaseException:
            self.ended(client_address)        # no thread was started for it
            raise

    def opened_at(self, client_address) -> float:
        """When the connection was accepted (monotonic clock): the A-ASSOCIATE-RQ's
        deadline counts from then (engine/transport.py)."""
        return time.monotonic()

    def ended(self, client_address) -> None:
        """A connection served by this process ended (or was never served)."""
        self.release(client_address[0])
        dispatcher = self.dispatcher
        if dispatcher is not None:
            dispatcher.local_ended()

    def refuse_tls(self, client_address, reason: str) -> None:
        log.warning("refusing the connection from %s:%s on the TLS port: %s",
                    client_address[0], client_address[1], reason)
        if self.on_tls_refused is not None:
            try:
                self.on_tls_refused(client_address[0], reason)
            except Exception:   # bookkeeping must not break the listener
                log.exception("could not record the refused TLS connection")

    def release(self, host: str) -> None:
        with self._count_lock:
            self._counts[host] -= 1
            if self._counts[host] <= 0:
                del self._counts[host]


class HandedAssociationServer(CappedAssociationServer):
    """The same listener in a receiving process (dicom/receiver.py): no socket of its
    own (nothing more listens), served only connections the DICOM daemon accepted,
    counted and handed over (``hand_in``). The daemon counts them against its caps;
    ``on_ended(connection)`` tells it when one ended."""

    def __init__(self, *args, on_ended, **kwargs):
        self._on_ended = on_ended
        self._handed: dict[tuple, tuple[int, float]] = {}
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        pass                # server_address stays the daemon's listening address

    def server_activate(self) -> None:
        pass

    def hand_in(self, request, client_address: tuple, connection: int, opened: float) -> None:
        with self._count_lock:
            self._handed[client_address] = (connection, opened)
        self.process_request(request, client_address)

    def opened_at(self, client_address) -> float:
        with self._count_lock:
            entry = self._handed.get(client_address)
        return entry[1] if entry is not None else time.monotonic()

    def ended(self, client_address) -> None:
        with self._count_lock:
            entry = self._handed.pop(client_address, None)
        if entry is not None:
            self._on_ended(entry[0])


def make_listener(ae, address: tuple[str, int], evt_handlers: list, *, per_address: int,
                  tls_context=None, on_tls_refused=None) -> CappedAssociationServer:
    """A listener for ``ae`` on ``address``, bound and listening (the kernel queues
    connections from now on) but accepting none until ``serve``; with the per-address
    cap, and with ``tls_context`` every connection is a TLS session first
    (engine/tls.py) and ``on_tls_refused(address, reason)`` hears of those that did
    not become one. One AE may have several listeners: they share its handlers and
    its ``maximum_associations`` (pynetdicom counts the AE's associations)."""
    return ae.make_server(address, evt_handlers=evt_handlers,
                          server_class=CappedAssociationServer, per_address=per_address,
                          tls_context=tls_context, on_tls_refused=on_tls_refused)


def serve(ae, server: CappedAssociationServer) -> CappedAssociationServer:
    """Accept on ``server`` in a background thread, as ``ae.start_server(block=False)``
    does. Only a served listener may be ``shutdown()`` (socketserver waits for its loop
    to end); one never served is only closed (``server_close()``)."""
    timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(target=make_target(server.serve_forever), name=f"AcceptorServer@{timestamp}",
                              daemon=True)
    thread.start()
    # pynetdicom's server.shutdown() removes itself from this list, and ae.shutdown() stops
    # whatever is in it.
    ae._servers.append(server)
    return server
