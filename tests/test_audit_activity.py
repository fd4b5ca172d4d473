"""The audit trail, the association log and the storage statistics, on SQLite and MariaDB."""
from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from dsmpacs.archive.activity import INCOMING, OUTGOING, Activity, AssociationSummary
from dsmpacs.archive.audit import AuditAction, AuditTrail
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.models import Instance
from dsmpacs.archive.statistics import Statistics
from tests import factories as f


def test_audit_records_and_filters_newest_first(archive):
    trail = AuditTrail.of(archive)
    trail.record("rad1", AuditAction.VIEW, study_instance_uid="1.2.3", address="10.0.0.5")
    trail.record("rad1", AuditAction.EXPORT, study_instance_uid="1.2.3", detail="zip")
    trail.record("admin", AuditAction.USER_ADD, detail="x" * 5000)
    entries = trail.recent()
    assert [e.action for e in entries] == ["user-add", "export", "view"]
    assert len(entries[0].detail) == 1024                    # long details are cut, not refused
    assert [e.action for e in trail.recent(actor="rad1")] == ["export", "view"]
    assert trail.recent(study_instance_uid="1.2.3", action="view")[0].address == "10.0.0.5"
    assert trail.count(actor="rad1") == 2 and trail.count() == 3
    assert [e.action for e in trail.recent(limit=1, offset=1)] == ["export"]


def test_association_log_round_trip(archive):
    log = Activity(archive.index)
    started = datetime(2026, 1, 2, 3, 4, 5)
    log.record(AssociationSummary(INCOMING, calling_ae="ANGIO1", called_ae="DSMPACS", peer="10.1.1.1:5000",
                                  started_at=started, ended_at=started + timedelta(seconds=12),
                                  services={"C-STORE", "C-ECHO"}, completed=40, warnings=1, failed=2,
                                  bytes=123456))
    log.record(AssociationSummary(OUTGOING, calling_ae="DSMPACS", called_ae="WS3D", outcome="failed",
                                  detail="connection refused"))
    newest, oldest = log.recent()
    assert newest.direction == OUTGOING and newest.outcome == "failed"
    assert oldest.services == "C-ECHO C-STORE" and oldest.completed == 40 and oldest.failed == 2
    assert oldest.seconds == 12 and oldest.bytes == 123456
    assert [e.called_ae for e in log.recent(direction=INCOMING)] == ["DSMPACS"]
    assert log.count() == 2 and log.count(direction=OUTGOING) == 1
    with pytest.raises(ValueError):
        log.record(AssociationSummary("sideways"))


def _store(archive, tmp_path, ds):
    path = f.write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    result = archive.ingest.import_file(path, Origin("import"))
    assert result.archived, result
    return result


def test_totals_recent_studies_and_volume_per_day(archive, tmp_path):
    stats = Statistics(archive.index)
    assert stats.totals().instances == 0
    patient = f.Patient(name="<img src=x onerror=alert(1)>", patient_id="XSS1")
    first = f.secondary_capture(patient=patient)
    _store(archive, tmp_path, first)
    _store(archive, tmp_path, f.secondary_capture(patient=patient, study_uid=first.StudyInstanceUID))
    _store(archive, tmp_path, f.ct_slice())
    totals = stats.totals()
    assert (totals.patients, totals.studies, totals.instances) == (2, 2, 3)
    with archive.index.read():
        sizes = [i.size for i in Instance.select()]
    assert totals.bytes == sum(sizes)

    recent = stats.recent_studies()
    assert {s.patient_name for s in recent} == {"<img src=x onerror=alert(1)>", "DOE^JOHN"}

    # Move one instance to two days ago (UTC) and look at the days in UTC+8.
    with archive.index.write():
        first_row = Instance.select().order_by(Instance.id).first()
        Instance.update(received_at=datetime(2026, 3, 9, 20, 0)).where(Instance.id == first_row.id).execute()
    days = stats.received_per_day(5, utc_offset_minutes=480, today=date(2026, 3, 12))
    assert [d.day for d in days] == [date(2026, 3, 8 + i) for i in range(5)]
    by_day = {d.day: d for d in days}
    # 2026-03-09 20:00 UTC is 2026-03-10 04:00 in UTC+8
    assert by_day[date(2026, 3, 10)].instances == 1 and by_day[date(2026, 3, 10)].bytes == first_row.size
    assert by_day[date(2026, 3, 9)].instances == 0
    assert sum(d.instances for d in days) == 1           # the others were received "now", not in range
