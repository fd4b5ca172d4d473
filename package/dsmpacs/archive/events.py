"""Domain events inside one process: one part of the archive says what happened,
others that care react, and neither imports the other.

Used for the reading workflow: reports publish ``report.state`` (a draft started,
a report signed final or amended) and the reading worklist moves its task and
ends the reader's grants; the worklist publishes ``reading.assigned``. Handlers run
synchronously in the publisher's thread after its transaction has committed; a
handler that raises is logged and does not stop the others or the publisher,
since the event has already happened.

Events are not persisted and do not cross processes: a consumer that must not
miss one across a restart keeps its own state (the worklist reads report states
from the index when it starts). Each process (the DICOM daemon, the web server)
builds its own Archive with the same subscribers, so an event raised in the DICOM
daemon (a rule's assignment when images arrive) is handled there: notifications
are rows in the index, which the web UI reads. Names and their keyword arguments:

- ``report.state``: study_instance_uid, state ("in-progress", "preliminary",
  "final", "amended"), username, report_id
- ``reading.assigned``: study_instance_uid, username (the assignee), task_id, by
- ``reading.released``: study_instance_uid, username, task_id, by
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Callable

log = logging.getLogger(__name__)

Handler = Callable[..., None]


class Events:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, name: str, handler: Handler) -> None:
        with self._lock:
            self._handlers[name].append(handler)

    def publish(self, name: str, **fields) -> None:
        with self._lock:
            handlers = list(self._handlers.get(name, ()))
        for handler in handlers:
            try:
                handler(**fields)
            except Exception:   # noqa: BLE001 - the event happened; one consumer's failure is its own
                log.exception("handler %r of event %s failed", handler, name)
