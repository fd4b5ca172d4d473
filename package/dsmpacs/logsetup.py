"""Log configuration for the daemons and the CLI."""
from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from dsmpacs.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_file_for(settings: Settings, process: str) -> Path:
    """The DICOM daemon (and the CLI) write the configured log file; the web
    process and the supervising parent write beside it (dsmpacs-web.log,
    dsmpacs-serve.log), because several processes rotating one file would lose
    lines."""
    path = settings.effective_log_file
    if process in ("web", "serve"):
        path = path.with_name(f"{path.stem}-{process}{path.suffix}")
    return path


class _ProcessLabel(logging.Filter):
    """Which process a line of the log file is from: this one's role, unless the record
    came from another (a receiving process of the DICOM daemon, dicom/receivers.py)."""

    def __init__(self, process: str):
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "dsmpacs_process"):
            record.dsmpacs_process = self.process
        return True


def configure(settings: Settings, *, to_file: bool = True, process: str = "dsmpacs") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(settings.log_level)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(stderr)
    if to_file:
        path = log_file_for(settings, process)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=10 * 2**20, backupCount=5,
                                                       encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(dsmpacs_process)s %(name)s: %(message)s"))
        handler.addFilter(_ProcessLabel(process))
        root.addHandler(handler)
    # peewee logs every SQL statement at DEBUG: far too much even for debugging.
    logging.getLogger("peewee").setLevel(logging.INFO)
    # pynetdicom narrates every PDU at INFO; keep its warnings and errors only.
    logging.getLogger("pynetdicom").setLevel(
        logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)
