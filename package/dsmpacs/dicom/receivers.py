"""The DICOM daemon's receiving processes: associations served on more than one core.

A Python process runs Python on one core at a time (the GIL), and receiving a
small instance is mostly Python: with four modalities sending at once, one
process is the bottleneck while the second core waits. With ``dicom_processes``
above 1 the daemon starts that many less one receiving processes
(``dsmpacs dicom-receiver``, dicom/receiver.py), each with the same AE, handlers
and archive, over the same index and storage (as the web process already is).

The daemon alone listens and accepts. It applies the per-address cap at accept
as before (engine/listener.py), so that cap stays one count over every process,
and then hands the connection itself to a receiving process over a private
socket pair (dicom/handover.py), or serves it here. ``max_associations`` is split
into shares, one per process: pynetdicom rejects an association in a process
already serving its share. A new connection goes to the process with the most of
its share free (a receiving process on a tie: the daemon also checkpoints, hashes
and speaks HL7). Only when the total already reaches ``max_associations`` does it
go to a process at or over its share, which then rejects it: the total is never
more than the setting, whichever process serves which association.

A receiving process tells the daemon when each connection it was handed ends
(the per-address count is released then), and sends its log records here, so
that one process writes the log file. If one dies, its connections are lost (as
they would be in a crash of the daemon), their counts are released, its share
goes back to the daemon, and it is started again after 1 s, 2 s, ... as the
supervisor restarts its children (supervisor.Watchdog); after
``watchdog_max_crashes`` in ``watchdog_window_minutes`` the daemon receives alone.
It ends when its end of the channel does: when the daemon stops, and when the daemon
dies, however, since the kernel then closes the daemon's end.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time

from dsmpacs.dicom import handover
from dsmpacs.settings import Settings
from dsmpacs.supervisor import Watchdog, exit_status

log = logging.getLogger(__name__)
STOP_SECONDS = 10.0         # a receiving process's time to end once told
READY_SECONDS = 30.0        # the daemon's longest wait for them at start (Receivers.wait_ready)


def shares(total: int, processes: int) -> list[int]:
    """``total`` associations split over ``processes`` (each at least one), first ones larger."""
    processes = max(1, min(processes, total))
    return [total // processes + (1 if i < total % processes else 0) for i in range(processes)]


class _Receiver:
    """One receiving process, as the daemon sees it."""

    def __init__(self, number: int, share: int):
        self.number, self.share = number, share
        self.proc: subprocess.Popen | None = None
        self.channel = None
        self.ready = False
        self.started = threading.Event()     # ready once, or given up on
        self.live: dict[int, tuple[object, tuple]] = {}     # connection -> (server, client address)


class Receivers:
    """The daemon's side: starts the receiving processes and hands them connections
    (``hand``, called by the listeners for every accepted connection)."""

    def __init__(self, settings: Settings, ae, servers: dict[str, object]):
        self.settings, self.ae = settings, ae
        self.servers = {name: server for name, server in servers.items() if server is not None}
        self._names = {id(server): name for name, server in self.servers.items()}
        _, *others = shares(settings.max_associations, settings.dicom_processes)
        self._local_live = 0
        self._receivers = [_Receiver(number, share) for number, share in enumerate(others, start=2)]
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watchdog = Watchdog(max_crashes=settings.watchdog_max_crashes,
                                  window=settings.watchdog_window_minutes * 60)
        self._rebalance()

    # --- processes ---------------------------------------------------------
    def start(self) -> "Receivers":
        for server in self.servers.values():
            server.dispatcher = self
        for receiver in self._receivers:
            threading.Thread(target=self._keep, args=(receiver,), daemon=True,
                             name=f"dicom-receiver-{receiver.number}").start()
        return self

    def stop(self) -> None:
        """Tell every receiving process to end (the end of its channel), wait for it."""
        self._stopping.set()
        for server in self.servers.values():
            server.dispatcher = None
        for receiver in self._receivers:
            channel, proc = receiver.channel, receiver.proc
            if channel is not None:
                try:
                    channel.shutdown(socket.SHUT_RDWR)      # its read ends, and so does ours
                except OSError:
                    pass
            if proc is not None:
                try:
                    proc.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    log.warning("DICOM receiving process %d (pid %d) did not end in %.0f s; killed",
                                receiver.number, proc.pid, STOP_SECONDS)
                    proc.kill()
                    proc.wait()

    def wait_ready(self, seconds: float) -> None:
        """Wait until every receiving process is up (or was given up on), at most ``seconds``."""
        deadline = time.monotonic() + seconds
        for receiver in self._receivers:
            if not receiver.started.wait(max(0.0, deadline - time.monotonic())):
                log.warning("DICOM receiving process %d is not up after %.0f s; accepting "
                            "meanwhile", receiver.number, seconds)
                return

    def _keep(self, receiver: _Receiver) -> None:
        """Run one receiving process, and again after it ended, until ``stop``."""
        while not self._stopping.is_set():
            if self._spawn(receiver):
                if self._stopping.is_set():        # stop() ran while it was starting
                    receiver.channel.shutdown(socket.SHUT_RDWR)
                self._listen(receiver)
            if self._stopping.is_set():
                return
            delay = self._watchdog.crashed(f"receiver-{receiver.number}", time.monotonic())
            if delay is None:
                receiver.started.set()
                log.error("DICOM receiving process %d keeps ending; not started again: this "
                          "process serves its share too (watchdog_max_crashes)", receiver.number)
                return
            if self._stopping.wait(delay):
                return

    def _spawn(self, receiver: _Receiver) -> bool:
        """Start the process, its channel in ``receiver``; False when it could not be."""
        ours, theirs = handover.pair()
        try:
            command = [sys.executable, "-m", "dsmpacs", "dicom-receiver", "--channel-fd", str(theirs.fileno())]
            # No preexec_fn (PR_SET_PDEATHSIG, as the supervisor sets): unsafe to run
            # between fork and exec with this process's threads; the channel's end tells
            # the receiving process that the daemon died.
            proc = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            log.error("cannot start DICOM receiving process %d: %s", receiver.number, exc)
            return False
        finally:
            theirs.close()
        receiver.proc, receiver.channel = proc, ours
        try:
            handover.send(ours, {
                "settings": self.settings.as_values(), "number": receiver.number, "share": receiver.share,
                "listeners": {name: list(server.server_address[:2]) for name, server in self.servers.items()},
            })
        except OSError as exc:
            log.error("cannot reach DICOM receiving process %d: %s", receiver.number, exc)
        return True

    def _listen(self, receiver: _Receiver) -> None:
        """What the receiving process says, until its channel ends (on the thread that
        started it, which alone changes ``proc`` and ``channel``)."""
        proc, channel = receiver.proc, receiver.channel
        try:
            while True:
                got = handover.receive(channel)
                if got is None:
                    break
                message, fd = got
                if fd is not None:
                    os.close(fd)            # nothing it sends carries one
                if "log" in message:
                    _relog(message["log"], receiver.number)
                elif "released" in message:
                    self._released(receiver, message["released"])
                elif "ready" in message:
                    with self._lock:
                        receiver.ready = True
                        self._rebalance()
                    receiver.started.set()
                    log.info("DICOM receiving process %d up (pid %d), serving up to %d associations",
                             receiver.number, proc.pid, receiver.share)
        except (OSError, ValueError, TypeError) as exc:
            if not self._stopping.is_set():
                log.error("DICOM receiving process %d: channel failed: %s", receiver.number, exc)
        finally:
            self._lost(receiver, proc, channel)

    def _lost(self, receiver: _Receiver, proc: subprocess.Popen, channel) -> None:
        with self._lock:
            receiver.ready = False
            live, receiver.live = receiver.live, {}
            self._rebalance()
        channel.close()
        for server, address in live.values():
            server.release(address[0])
        if self._stopping.is_set():
            return
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.error("DICOM receiving process %d (pid %d) ended (%s); %d association(s) it served are "
                  "lost", receiver.number, proc.pid, exit_status(proc.returncode), len(live))

    def _rebalance(self) -> None:
        """The daemon's own AE serves what the receiving processes that are up do not
        (under the lock, or before any thread runs)."""
        self.ae.maximum_associations = self.settings.max_associations - sum(
            r.share for r in self._receivers if r.ready)

    # --- connections -------------------------------------------------------
    def hand(self, server, request, client_address) -> bool:
        """Pass an accepted connection to a receiving process: True when it was (or when
        it had to be closed), False when it is to be served here."""
        with self._lock:
            target = self._choose()
            if target is None:
                self._local_live += 1
                return False
            connection = next(self._ids)
            target.live[connection] = (server, client_address)
            channel = target.channel
        try:
            handover.send(channel, {"connection": connection, "listener": self._names[id(server)],
                                    "address": list(client_address[:2]), "opened": time.monotonic()},
                          request.fileno())
        except OSError as exc:
            # Its process is ending: this connection goes with its others (the peer retries).
            log.warning("closing a connection from %s: DICOM receiving process %d is unreachable (%s)",
                        client_address[0], target.number, exc)
            self._released(target, connection)
        request.close()        # ours only: the receiving process holds the connection
        return True

    def _choose(self) -> _Receiver | None:
        """Where the next connection goes (None: here), under the lock."""
        own_room = self.ae.maximum_associations - self._local_live
        ready = [r for r in self._receivers if r.ready]
        if not ready:
            return None
        total = self._local_live + sum(len(r.live) for r in ready)
        rooms = [(r.share - len(r.live), r) for r in ready]
        if total >= self.settings.max_associations:
            # Full: to one at or over its share, which rejects it (pynetdicom's count).
            room, target = min(rooms, key=lambda pair: pair[0])
            return None if own_room <= room else target
        room, target = max(rooms, key=lambda pair: pair[0])
        return target if room >= own_room else None

    def local_ended(self) -> None:
        with self._lock:
            self._local_live -= 1

    def _released(self, receiver: _Receiver, connection: int) -> None:
        with self._lock:
            entry = receiver.live.pop(connection, None)
        if entry is not None:
            server, address = entry
            server.release(address[0])


def _relog(fields: dict, number: int) -> None:
    """A receiving process's log record, through this process's handlers."""
    if not isinstance(fields, dict):
        return
    record = logging.makeLogRecord({**fields, "args": None, "exc_info": None,
                                    "dsmpacs_process": f"dicom-{number}"})
    logging.getLogger(record.name).handle(record)


def start(settings: Settings, ae, servers: dict[str, object]) -> Receivers | None:
    """The receiving processes ``dicom_processes`` asks for, started; None for none."""
    if min(settings.dicom_processes, settings.max_associations) < 2:
        return None
    return Receivers(settings, ae, servers).start()
