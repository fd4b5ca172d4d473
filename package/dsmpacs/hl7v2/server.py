"""The HL7 listener: MLLP over TCP (hl7_port), run by the DICOM daemon beside its
DICOM listeners (app.py ``serve_dicom``).

One asyncio loop on its own thread, python-hl7's MLLP server on it. Each message
is bounded before anything parses it: the connection's address must be in
hl7_allowed_hosts (else it is closed unanswered); a message may be at most
hl7_max_kb (a larger one is answered AR and the connection closed, since the
rest of it is still coming); once its first byte came it must be whole within
hl7_timeout, and a connection idle for hl7_idle_timeout is closed. A message that
cannot be read (not MLLP-framed, not HL7, an unknown character set) is answered
AR and logged, and the connection goes on to the next one. The domain work runs
on a worker thread (index writes block), one message at a time per connection,
so the ACKs go back in the order the messages came.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading

import hl7
from hl7.mllp import start_hl7_server

from dsmpacs.archive.audit import AuditAction
from dsmpacs.hl7v2 import ack, charset
from dsmpacs.hl7v2.ack import Header, Outcome, Problem
from dsmpacs.hl7v2.orm import OrderMessages, header_of
from dsmpacs.settings import Settings

log = logging.getLogger(__name__)

START, END = b"\x0b", b"\x1c\x0d"
READ_CHUNK = 65536
# Connections served at once; the rest are closed at accept. An interface engine
# uses one or two; the allowed hosts are few.
MAX_CONNECTIONS = 16


def _prefix_header(data: bytes) -> Header:
    """The MSH fields the ACK echoes, read from the raw start of a message that will
    not be parsed (too large, undecodable); '' where they cannot be found."""
    text = data.lstrip(START).split(b"\r", 1)[0][:4096].decode("latin-1")
    if not text.startswith("MSH") or len(text) < 8:
        return Header()
    fields = text.split(text[3]) + [""] * 20
    component = fields[1][:1] or "^"
    return Header(sending_application=fields[2].split(component)[0],
                  sending_facility=fields[3].split(component)[0], receiving_facility=fields[5],
                  event=(fields[8].split(component) + [""])[1], control_id=fields[9],
                  processing_id=fields[10], version=fields[11].split(component)[0],
                  charset=charset.declared(text))


class Hl7Listener:
    def __init__(self, settings: Settings, archive):
        self.settings = settings
        self.messages = OrderMessages(archive)
        self.networks = settings.hl7_networks
        self.application = settings.ae_title
        self.server_address: tuple = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._active = 0

    # --- running ----------------------------------------------------------------
    def start(self) -> "Hl7Listener":
        """Bind and serve on a thread; returns once listening (raises OSError if it cannot bind)."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="hl7-listener",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def _run(self, ready: threading.Event, failure: list) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        host = self.settings.hl7_host or self.settings.dicom_host
        try:
            server = loop.run_until_complete(start_hl7_server(
                self._connection, host, self.settings.hl7_port, reuse_address=True,
                limit=self.settings.hl7_max_kb * 1024 + READ_CHUNK))
            self.server_address = server.sockets[0].getsockname()[:2]
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def shutdown(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    # --- one connection ---------------------------------------------------------
    def allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    async def _connection(self, reader, writer) -> None:
        address = str((writer.get_extra_info("peername") or ("",))[0])
        try:
            if not self.allowed(address):
                log.warning("HL7 connection from %s refused: not in hl7_allowed_hosts", address)
                await asyncio.to_thread(self.messages.refused, AuditAction.ASSOCIATION_REJECTED,
                                        f"hl7:{address}", address, "address not in hl7_allowed_hosts")
                return
            if self._active >= MAX_CONNECTIONS:
                log.warning("HL7 connection from %s refused: %d connections open", address, self._active)
                return
            self._active += 1
            try:
                await self._serve(reader, writer, address)
            finally:
                self._active -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("HL7 connection from %s ended by an error", address)
        finally:
            writer.close()

    async def _serve(self, reader, writer, address: str) -> None:
        cap = self.settings.hl7_max_kb * 1024
        buffer = bytearray()
        while True:
            if not buffer:
                try:
                    chunk = await asyncio.wait_for(reader.read(READ_CHUNK), self.settings.hl7_idle_timeout)
                except TimeoutError:
                    log.info("HL7 connection from %s idle for %.0f s: closed", address,
                             self.settings.hl7_idle_timeout)
                    return
                if not chunk:
                    return
                buffer += chunk
            deadline = asyncio.get_running_loop().time() + self.settings.hl7_timeout
            while (end := buffer.find(END)) < 0 and len(buffer) <= cap + 1:
                left = deadline - asyncio.get_running_loop().time()
                try:
                    chunk = await asyncio.wait_for(reader.read(READ_CHUNK), max(left, 0.001))
                except TimeoutError:
                    log.warning("HL7 message from %s not whole within %.0f s (%d bytes): connection closed",
                                address, self.settings.hl7_timeout, len(buffer))
                    return
                if not chunk:
                    log.warning("HL7 connection from %s closed in the middle of a message", address)
                    return
                buffer += chunk
            if end < 0 or end > cap + 1:
                log.warning("HL7 message from %s larger than hl7_max_kb (%d KiB): AR, connection closed",
                            address, self.settings.hl7_max_kb)
                header = _prefix_header(bytes(buffer[:4096]))
                outcome = Outcome("AR", "message too large", [Problem(
                    ack.INTERNAL_ERROR, text=f"the message is larger than {self.settings.hl7_max_kb} KiB")])
                writer.writeblock(self._encode(header, outcome))
                await writer.drain()
                return
            block = bytes(buffer[:end])
            del buffer[:end + len(END)]
            answer = await asyncio.to_thread(self.answer, block, address)
            writer.writeblock(answer)
            await writer.drain()

    # --- one message ------------------------------------------------------------
    def answer(self, block: bytes, address: str) -> bytes:
        """The ACK's bytes for one framed block (start byte included, end bytes not)."""
        stripped = block.lstrip(b"\r\n ")
        if not stripped.startswith(START):
            return self._malformed(block, address, "not an MLLP block (no start byte)")
        data = stripped[1:]
        try:
            text, name = charset.decode(data)
        except charset.CharsetProblem as exc:
            header = _prefix_header(data)
            log.warning("HL7 message %s from %s: %s: AR", header.control_id, address, exc)
            return self._encode(header, Outcome("AR", "character set", [Problem(
                ack.TABLE_VALUE_NOT_FOUND, "MSH", 18, 0, str(exc))]))
        text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
        if not text.startswith("MSH") or len(text) < 8:
            return self._malformed(data, address, "not an HL7 message (no MSH segment)")
        try:
            message = hl7.parse(text)
            header = header_of(message)
        except Exception as exc:        # the parser's errors are not one type
            return self._malformed(data, address, f"not parseable: {type(exc).__name__}")
        try:
            outcome = self.messages.handle(message, header, address)
        except Exception:
            log.exception("HL7 message %s from %s failed", header.control_id, address)
            outcome = Outcome("AR", "internal error", [Problem(ack.INTERNAL_ERROR, text="internal error")])
        log.info("HL7 message %s (event %s) from %s (%s^%s): %s %s", header.control_id, header.event,
                 address, header.sending_application, header.sending_facility, outcome.code, outcome.text)
        return self._encode(header, outcome)

    def _malformed(self, data: bytes, address: str, reason: str) -> bytes:
        header = _prefix_header(data)
        log.warning("HL7 from %s: %s (%d bytes): AR", address, reason, len(data))
        return self._encode(header, Outcome("AR", reason[:80], [Problem(ack.SEGMENT_SEQUENCE, text=reason)]))

    def _encode(self, header: Header, outcome: Outcome) -> bytes:
        return charset.encode(ack.message(header, outcome, self.application), header.charset)


def start(settings: Settings, archive) -> Hl7Listener | None:
    """The listener when hl7_port is set (listening when this returns), else None."""
    if not settings.hl7_port:
        return None
    listener = Hl7Listener(settings, archive)
    if settings.hl7_institution:
        # Said once at start rather than found out from the first refused order; not
        # fatal: an administrator may create that institution while the archive runs.
        try:
            listener.messages.institutions.get(settings.hl7_institution)
        except Exception as exc:
            log.error("hl7_institution %r: %s; orders from senders without an alias are refused (AR)",
                      settings.hl7_institution, exc)
    return listener.start()
