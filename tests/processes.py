"""Which process of the DICOM daemon serves a connection (dicom/receivers.py), read
from /proc: its receiving process's pid, and the TCP sockets each process holds."""
from __future__ import annotations

import os
import re
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage, Verification

from tests.peers import wait_until

UP = re.compile(r"DICOM receiving process 2 up \(pid (\d+)\)")


def receiver_pid(srv, after: int = 0) -> int:
    """The pid of the receiving process that said it was up (the ``after``-th such line
    onwards: 1 for the one started after a first one ended)."""
    def found():
        pids = UP.findall(srv.log())
        return int(pids[after]) if len(pids) > after else None
    return wait_until(found, what="the receiving process up")


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state, parent..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def gone(pid: int) -> bool:
    """The process ended (a zombie not yet waited for counts as ended)."""
    try:
        return _stat_fields(pid)[0] == "Z"
    except FileNotFoundError:
        return True


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def tcp_sockets(pid: int) -> list[tuple[int, int, str]]:
    """(local port, remote port, state) of every TCP socket process ``pid`` holds."""
    mine, found = socket_inodes(pid), []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in mine:
                found.append((int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16),
                              fields[3]))
    return found


def serves(pid: int, server_port: int, client_port: int) -> bool:
    return any(local == server_port and remote == client_port and state == "01"       # ESTABLISHED
               for local, remote, state in tcp_sockets(pid))


def listens(pid: int) -> list[int]:
    return [local for local, _, state in tcp_sockets(pid) if state == "0A"]


def held_association(port: int, tls_args=None, ae_title: str = "HOLDER"):
    """An established association of pynetdicom's that stays open, and its client port."""
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(SecondaryCaptureImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DSMPACS", tls_args=tls_args)
    assert assoc.is_established
    return assoc, assoc.dul.socket.socket.getsockname()[1]


def served_where(srv, receiver: int, client_port: int, server_port: int | None = None) -> str:
    """"receiver" or "daemon": which process holds the connection from ``client_port``
    (to the plain port, or to ``server_port``)."""
    daemon, server_port = srv.child_pid("dicom"), server_port or srv.port
    return wait_until(lambda: "receiver" if serves(receiver, server_port, client_port)
                      else "daemon" if serves(daemon, server_port, client_port) else None,
                      timeout=10, what="the process that holds the connection")
