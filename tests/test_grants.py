"""Study grants (archive/grants.py) on SQLite and MariaDB, the migration that adds
them, and the in-process domain events (archive/events.py)."""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from dsmpacs.archive import database
from dsmpacs.archive.events import Events
from dsmpacs.archive.grants import GrantError
from dsmpacs.archive.models import SchemaVersion, StudyGrant, utcnow

STUDY = "1.2.826.0.1.3680043.8.498.9501"
PRIOR = "1.2.826.0.1.3680043.8.498.9502"


def test_a_grant_gives_one_study_until_revoked_or_expired(archive):
    grants = archive.grants
    assert grants.studies_for("li") == set()
    grants.grant("li", STUDY, reason="assignment", source="task-1", granted_by="coord")
    grants.grant("li", PRIOR, reason="prior", source="task-1", granted_by="coord")
    assert grants.studies_for("li") == {STUDY, PRIOR}
    assert grants.allows("li", STUDY) and not grants.allows("wang", STUDY)
    # The report is final: the grants end after a grace period, not at once.
    later = utcnow() + timedelta(days=7)
    assert grants.expire(source="task-1", at=later) == 2
    assert grants.allows("li", STUDY)
    assert not grants.allows("li", STUDY, now=later + timedelta(seconds=1))
    # Released: gone at once, the row kept for the record.
    assert grants.revoke(source="task-1", username="li", reason="assignment") == 1
    assert grants.studies_for("li") == {PRIOR}
    history = grants.for_study(STUDY)
    assert [(g.username, g.reason, g.active()) for g in history] == [("li", "assignment", False)]


def test_granting_again_extends_instead_of_duplicating(archive):
    grants = archive.grants
    soon = utcnow() + timedelta(hours=1)
    first = grants.grant("li", STUDY, reason="manual", source="share-9", expires_at=soon)
    again = grants.grant("li", STUDY, reason="manual", source="share-9", expires_at=soon + timedelta(days=1))
    assert again.id == first.id and again.expires_at > first.expires_at
    assert len(grants.for_study(STUDY)) == 1


@pytest.mark.parametrize("args", [("", STUDY, "assignment"), ("li", "../etc", "assignment"),
                                  ("li", STUDY, "because")])
def test_bad_grants_are_refused(archive, args):
    user, study, reason = args
    with pytest.raises(GrantError):
        archive.grants.grant(user, study, reason=reason)


def test_upgrade_from_version_8_creates_the_grant_table(archive):
    with archive.index.write():
        archive.db.execute_sql(f"DROP TABLE {StudyGrant._meta.table_name}")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=8)
    assert database.upgrade(archive.db) == (8, database.LATEST_VERSION)
    archive.grants.grant("li", STUDY, reason="manual")
    assert archive.grants.allows("li", STUDY)


def test_events_reach_every_subscriber_even_when_one_fails(caplog):
    events = Events()
    seen = []

    def broken(**fields):
        raise RuntimeError("consumer bug")

    events.subscribe("report.state", broken)
    events.subscribe("report.state", lambda **fields: seen.append(fields))
    with caplog.at_level(logging.ERROR, logger="dsmpacs.archive.events"):
        events.publish("report.state", study_instance_uid=STUDY, state="final", username="li", report_id=3)
    assert seen == [{"study_instance_uid": STUDY, "state": "final", "username": "li", "report_id": 3}]
    assert "consumer bug" in caplog.text
    events.publish("nobody.listens", x=1)      # no subscriber: nothing happens
