"""The channel between the DICOM daemon and its receiving processes.

One Unix socket pair per receiving process (``SOCK_SEQPACKET``: each message
arrives whole or not at all), made by the daemon and inherited by that process
alone. Each message is one JSON object, at most ``MAX_MESSAGE`` bytes, and may
carry one file descriptor (``SCM_RIGHTS``): an accepted connection.

From the daemon (dicom/receivers.py):

* ``{"settings": {...}, "number": n, "share": n, "listeners": {"plain": [host, port],
  ...}}``: the first message: the daemon's Settings, the process's number (2, 3...:
  its run file is ``run/dicom-<number>.json``), how many associations it may serve at
  once, and the address of each listener whose connections it may be handed;
* ``{"connection": id, "listener": "plain"|"tls", "address": [host, port],
  "opened": t}`` with the connection's socket; ``opened`` is when it was accepted,
  on the monotonic clock, which every process of the machine shares.

From a receiving process (dicom/receiver.py):

* ``{"ready": pid}`` once it can serve connections;
* ``{"released": id}`` when a connection it was handed has ended;
* ``{"log": {...}}``: a log record, for the daemon's own log (one file, one writer).

The end of the channel (either side closing it) ends the receiving process.
"""
from __future__ import annotations

import json
import os
import socket

MAX_MESSAGE = 256 * 1024


class ChannelError(OSError):
    """A message that is not one this channel carries."""


def pair() -> tuple[socket.socket, socket.socket]:
    """(the daemon's end, the receiving process's end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def encode(message: dict) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_MESSAGE:
        raise ChannelError(f"a message of {len(data)} bytes is over the channel's {MAX_MESSAGE}")
    return data


def send(channel: socket.socket, message: dict, fd: int | None = None) -> None:
    data = encode(message)
    if fd is None:
        channel.send(data)
    else:
        socket.send_fds(channel, [data], [fd])


def receive(channel: socket.socket) -> tuple[dict, int | None] | None:
    """The next message and the descriptor it carried (None: it carried none);
    None when the other side closed the channel. Blocks."""
    try:
        data, fds, flags, _ = socket.recv_fds(channel, MAX_MESSAGE, 1)
    except ConnectionResetError:        # the other side died with messages unread
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ChannelError("a message was cut short on the channel")
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    try:
        message = json.loads(data)
    except ValueError as exc:
        for fd in fds:
            os.close(fd)
        raise ChannelError(f"unreadable message on the channel: {exc}") from None
    if not isinstance(message, dict):
        for fd in fds:
            os.close(fd)
        raise ChannelError("a message on the channel is not an object")
    return message, (fds[0] if fds else None)
