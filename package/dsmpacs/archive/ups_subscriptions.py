"""UPS-RS subscriptions (PS3.4 CC.2.3, PS3.18 11.10-11.12): which AE titles want
event reports about which reading workitems (archive/reading.py).

A workitem subscription names one workitem; the global subscription (the
well-known UID ``GLOBAL``) names every workitem, existing and future, except
those the AE unsubscribed from one by one (a row with ``subscribed`` false).
Unsubscribing from the global UID ends every subscription of the AE; suspending it
keeps the AE subscribed to the workitems that exist now (their rows are written)
and stops the new ones. Rows live in the index, so every web process (and a
later one) sees the same subscriptions. The event reports themselves go out over
the WebSocket channel of web/upsws.py. No protocol here.
"""
from __future__ import annotations

import peewee

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import ReadingTask, UpsSubscription, utcnow

GLOBAL = "1.2.840.10008.5.1.4.34.5"            # the Worklist (global) subscription
FILTERED_GLOBAL = "1.2.840.10008.5.1.4.34.5.1"  # not offered
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"          # every workitem's SOP class (PS3.4 CC.3.1)
# Event Type IDs (PS3.4 Table CC.2.4-1) this archive sends.
STATE_REPORT = 1
ASSIGNED = 5
# The UPS states of a finished workitem: nothing more to report.
FINAL_STATES = ("COMPLETED", "CANCELED")


class Subscriptions:
    def __init__(self, index: Index):
        self.index = index

    def subscribe(self, ae_title: str, ups_uid: str, *, deletion_lock: bool = False, owner: str = "") -> None:
        """Subscribe (again: the lock and owner follow the latest request)."""
        with self.index.write():
            changed = (UpsSubscription.update(subscribed=True, deletion_lock=deletion_lock, owner=owner[:64],
                                              created_at=utcnow())
                       .where(UpsSubscription.ae_title == ae_title, UpsSubscription.ups_uid == ups_uid)
                       .execute())
            if not changed:
                try:
                    with self.index.db.atomic():
                        UpsSubscription.create(ae_title=ae_title, ups_uid=ups_uid, deletion_lock=deletion_lock,
                                               owner=owner[:64])
                except peewee.IntegrityError:     # another request created it meanwhile: same result
                    pass

    def unsubscribe(self, ae_title: str, ups_uid: str) -> bool:
        """False when the AE was not subscribed there (404 for the caller)."""
        with self.index.write():
            if ups_uid == GLOBAL:
                return bool(UpsSubscription.delete().where(UpsSubscription.ae_title == ae_title).execute())
            if not self._subscribed(ae_title, ups_uid):
                return False
            if self._has_global(ae_title):
                # Still globally subscribed: remember that this one workitem is left out.
                if not (UpsSubscription.update(subscribed=False)
                        .where(UpsSubscription.ae_title == ae_title, UpsSubscription.ups_uid == ups_uid)
                        .execute()):
                    UpsSubscription.create(ae_title=ae_title, ups_uid=ups_uid, subscribed=False)
            else:
                UpsSubscription.delete().where(UpsSubscription.ae_title == ae_title,
                                               UpsSubscription.ups_uid == ups_uid).execute()
            return True

    def suspend(self, ae_title: str, open_states: tuple[str, ...]) -> bool:
        """Suspend the AE's global subscription: the workitems in ``open_states`` (task
        states) stay subscribed, new ones no longer are. False when it had none."""
        with self.index.write():
            row = UpsSubscription.get_or_none(UpsSubscription.ae_title == ae_title,
                                              UpsSubscription.ups_uid == GLOBAL)
            if row is None:
                return False
            have = {uid for (uid,) in UpsSubscription.select(UpsSubscription.ups_uid)
                    .where(UpsSubscription.ae_title == ae_title).tuples()}
            for (uid,) in (ReadingTask.select(ReadingTask.ups_uid)
                           .where(ReadingTask.state.in_(open_states)).tuples()):
                if uid not in have:
                    UpsSubscription.create(ae_title=ae_title, ups_uid=uid, deletion_lock=row.deletion_lock,
                                           owner=row.owner)
            row.delete_instance()
            return True

    def is_subscribed(self, ae_title: str, ups_uid: str) -> bool:
        with self.index.read():
            return self._subscribed(ae_title, ups_uid)

    def _subscribed(self, ae_title: str, ups_uid: str) -> bool:
        row = UpsSubscription.get_or_none(UpsSubscription.ae_title == ae_title, UpsSubscription.ups_uid == ups_uid)
        if row is not None:
            return bool(row.subscribed)
        return ups_uid != GLOBAL and self._has_global(ae_title)

    def _has_global(self, ae_title: str) -> bool:
        return UpsSubscription.select().where(UpsSubscription.ae_title == ae_title,
                                              UpsSubscription.ups_uid == GLOBAL).exists()

    def of(self, ae_title: str) -> tuple[bool, set[str], set[str]]:
        """(globally subscribed, workitems subscribed one by one, workitems left out)."""
        with self.index.read():
            rows = list(UpsSubscription.select(UpsSubscription.ups_uid, UpsSubscription.subscribed)
                        .where(UpsSubscription.ae_title == ae_title).tuples())
        everything = any(uid == GLOBAL for uid, _ in rows)
        return (everything, {u for u, on in rows if on and u != GLOBAL}, {u for u, on in rows if not on})

    def stamps(self, ae_title: str) -> set[tuple[str, object]]:
        """(UID, when) of the AE's subscriptions: what a channel opened now is told about."""
        with self.index.read():
            return set(UpsSubscription.select(UpsSubscription.ups_uid, UpsSubscription.created_at)
                       .where(UpsSubscription.ae_title == ae_title).tuples())

    def created_since(self, since) -> list[tuple[str, str, object]]:
        """(AE title, UID, when) of the subscriptions made at or after ``since``: each gets
        its initial state reports."""
        with self.index.read():
            return list(UpsSubscription.select(UpsSubscription.ae_title, UpsSubscription.ups_uid,
                                               UpsSubscription.created_at)
                        .where(UpsSubscription.created_at >= since, UpsSubscription.subscribed == True)  # noqa: E712
                        .tuples())


def event_report(ups_uid: str, event_type: int, attributes: dict) -> dict:
    """A UPS event report as DICOM JSON (PS3.18 11.13 and 8.10.5): the N-EVENT-REPORT's
    Affected SOP Class and Instance UIDs and Event Type ID, with the event's attributes."""
    return {"00000002": {"vr": "UI", "Value": [UPS_PUSH]},
            "00001000": {"vr": "UI", "Value": [ups_uid]},
            "00001002": {"vr": "US", "Value": [event_type]},
            **attributes}


def state_report(ups_uid: str, ups_state: str) -> dict:
    """Event 1: Procedure Step State and Input Readiness State (the studies of a reading
    task are in the archive once it exists: READY)."""
    return event_report(ups_uid, STATE_REPORT, {"00741000": {"vr": "CS", "Value": [ups_state]},
                                                "00404041": {"vr": "CS", "Value": ["READY"]}})
