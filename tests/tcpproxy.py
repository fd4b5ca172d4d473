"""A TCP forwarder we can cut: the real MariaDB behind a link that goes down on demand.
It can also watch what passes (``on_reply``: every chunk the server sent, before the
client has it), to time an answer on the wire from outside both peers."""
from __future__ import annotations

import socket
import threading
from typing import Callable


class TcpProxy:
    def __init__(self, target: tuple[str, int], port: int = 0,
                 on_reply: Callable[[bytes], None] | None = None):
        self.target = target
        self.port = port
        self.on_reply = on_reply
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> "TcpProxy":
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self.port = lst.getsockname()[1]
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()
        return self

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b, watch in ((client, upstream, None), (upstream, client, self.on_reply)):
                threading.Thread(target=self._pipe, args=(a, b, watch), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, watch: Callable[[bytes], None] | None) -> None:
        try:
            while data := src.recv(65536):
                # Watched before it is forwarded: the server has sent it, and the client
                # cannot act on it (and a test thread cannot look) before it is recorded.
                if watch is not None:
                    watch(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        """Refuse new connections and cut every open one, like a database host going away."""
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not,
            # and the socket would keep accepting.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self._conns.clear()
