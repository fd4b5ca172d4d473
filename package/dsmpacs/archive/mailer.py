"""Notification e-mail through the configured SMTP server (settings smtp_*).

Sending happens on one background thread fed by a queue: an event handler
(archive/notifications.py) runs in the thread of whoever published the event,
which must not wait for a mail server. A message that cannot be sent is logged
and dropped; the notice itself is in the web UI either way.
"""
from __future__ import annotations

import logging
import queue
import re
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r"^[^@\s<>\"]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z0-9-]{2,63}$")
TIMEOUT = 20


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address))


class Mailer:
    def __init__(self, host: str, port: int = 587, *, user: str = "", password: str = "", sender: str = "",
                 starttls: bool = True):
        self.host, self.port, self.user, self.password = host, port, user, password
        self.sender = sender or f"dsmpacs@{host}"
        self.starttls = starttls
        self._queue: queue.Queue[EmailMessage | None] = queue.Queue(maxsize=1000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0

    @classmethod
    def from_settings(cls, settings) -> "Mailer | None":
        if not settings.smtp_host:
            return None
        return cls(settings.smtp_host, settings.smtp_port, user=settings.smtp_user, password=settings.smtp_password,
                   sender=settings.smtp_from, starttls=settings.smtp_starttls)

    def send(self, to: str, subject: str, body: str) -> None:
        """Queue a plain-text UTF-8 message (returns at once)."""
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message["Date"], message["Message-ID"] = formatdate(localtime=False), make_msgid(domain="dsmpacs")
        message.set_content(body, charset="utf-8")
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mailer", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            log.error("notification e-mail to %s dropped: the mail queue is full", to)

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            try:
                self._deliver(message)
                self.sent += 1
            except (OSError, smtplib.SMTPException) as exc:
                log.error("notification e-mail to %s not sent: %s", message["To"], exc)

    def _deliver(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.user:
                smtp.login(self.user, self.password)
            smtp.send_message(message)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=TIMEOUT)
