"""The reading worklist's domain (archive/reading.py, archive/reading_rules.py) on
SQLite and MariaDB: tasks from arriving studies, rules, assignment through grants,
claim and release, UPS state changes with Transaction UIDs, and the report.state
event. The web page and UPS-RS against a real server: tests/test_reading_server.py."""
from __future__ import annotations

from datetime import timedelta

import pytest

from dsmpacs.archive import database
from dsmpacs.archive.attributes import Level
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.models import ReadingRule, ReadingTask, SchemaVersion, StudyGrant, utcnow
from dsmpacs.archive.reading import ReadingError, hook
from dsmpacs.settings import Settings
from tests import factories as f

VERSION_BEFORE = 10     # the schema version before the reading tables (renumbered at merge)
STUDY, PRIOR = "1.2.826.0.1.3680043.8.498.7001", "1.2.826.0.1.3680043.8.498.7002"


@pytest.fixture(scope="module")
def shared_archive(module_database_url, tmp_path_factory):
    from dsmpacs.archive import Archive

    settings = Settings.load(data_dir=tmp_path_factory.mktemp("reading"), env={}, overrides={
        "database_url": module_database_url, "min_free_mb": 0, "reading_grace_hours": 48})
    arc = Archive(settings)
    arc.open(upgrade=True)
    yield arc
    arc.close()


@pytest.fixture
def archive(shared_archive):
    with shared_archive.index.write():
        for model in (ReadingTask, ReadingRule, StudyGrant):
            model.delete().execute()
    shared_archive.reading._seen.clear()
    return shared_archive


def arrival(uid=STUDY, modality="CT", description="CT head", patient_id="P7"):
    return {Level.STUDY: {"study_instance_uid": uid, "study_description": description, "accession_number": "A7"},
            Level.PATIENT: {"patient_id": patient_id, "patient_name": "WANG^LI"},
            Level.SERIES: {"modality": modality}}


def test_a_rule_by_modality_assigns_and_grants_with_priors(archive, tmp_path):
    reading = archive.reading
    reading.rules.add(name="mr-neuro", modality="MR", pattern="*brain*", assignee="zhang", priority="LOW")
    reading.rules.add(name="ct", modality="CT", assignee="li", priority="stat", due_hours=4, include_priors=True)
    # The prior is a stored study of the same patient (imported: it makes no task itself).
    prior = f.ct_slice(size=16, patient=f.Patient("WANG^LI", "P7"), study_uid=PRIOR)
    archive.ingest.import_file(f.write(prior, tmp_path / "prior.dcm"), Origin("import"))
    assert reading.for_study(PRIOR) is None

    task = reading.study_arrived(arrival())
    assert (task.state, task.assignee, task.rule, task.priority) == ("assigned", "li", "ct", "HIGH")
    assert timedelta(hours=3, minutes=59) < task.due_at - task.created_at <= timedelta(hours=4)
    assert archive.grants.studies_for("li") == {STUDY, PRIOR}
    assert {(g.reason, g.source) for g in archive.grants.for_study(PRIOR)} == {("prior", task.source)}
    # The same study again (another instance) makes no second task.
    reading._seen.clear()
    assert reading.study_arrived(arrival()) is None
    # A study no rule matches waits in the pool.
    pooled = reading.study_arrived(arrival(uid="1.2.3.4", modality="MR", description="MR knee"))
    assert (pooled.state, pooled.assignee, pooled.priority, pooled.due_at) == ("unread", "", "MEDIUM", None)
    brain = reading.study_arrived(arrival(uid="1.2.3.5", modality="MR", description="MR Brain w/o"))
    assert (brain.assignee, brain.priority) == ("zhang", "LOW")


def test_claim_release_and_reassign_move_the_grants(archive):
    reading = archive.reading
    seen = []
    archive.events.subscribe("reading.assigned", lambda **kw: seen.append(("assigned", kw["username"])))
    archive.events.subscribe("reading.released", lambda **kw: seen.append(("released", kw["username"])))
    task = reading.create(STUDY, patient_id="P7")
    claimed = reading.claim(task.id, "li")
    assert (claimed.state, claimed.assignee) == ("assigned", "li") and archive.grants.allows("li", STUDY)
    with pytest.raises(ReadingError) as refused:
        reading.claim(task.id, "zhang")
    assert refused.value.code == "conflict"
    reading.assign(task.id, "zhang", by="coord")          # a coordinator moves it
    assert not archive.grants.allows("li", STUDY) and archive.grants.allows("zhang", STUDY)
    released = reading.release(task.id, by="zhang")
    assert (released.state, released.assignee) == ("unread", "") and not archive.grants.allows("zhang", STUDY)
    assert seen == [("assigned", "li"), ("assigned", "zhang"), ("released", "zhang")]


def test_ups_states_need_the_performers_transaction_uid(archive):
    reading = archive.reading
    task = reading.create(STUDY)
    assert task.ups_state == "SCHEDULED"
    with pytest.raises(ReadingError) as bad:
        reading.start(task.id, "li", "not a uid")
    assert bad.value.code == "transaction"
    started = reading.start(task.id, "li", "1.2.3.99")
    assert (started.ups_state, started.state, started.assignee) == ("IN PROGRESS", "in-progress", "li")
    with pytest.raises(ReadingError) as again:
        reading.start(task.id, "zhang", "1.2.3.100")
    assert again.value.code == "conflict"
    with pytest.raises(ReadingError) as wrong:
        reading.finish(task.id, "1.2.3.100", "COMPLETED")
    assert wrong.value.code == "transaction"
    done = reading.finish(task.id, "1.2.3.99", "COMPLETED")
    assert (done.ups_state, done.state) == ("COMPLETED", "final")


def test_report_state_moves_the_task_and_ends_the_grants_after_the_grace_period(archive):
    reading = archive.reading
    task = reading.create(STUDY)
    reading.claim(task.id, "li")
    archive.events.publish("report.state", study_instance_uid=STUDY, state="preliminary", username="li",
                           report_id=1)
    assert reading.get(task.id).state == "preliminary"
    assert [g.expires_at for g in archive.grants.for_study(STUDY)] == [None]
    before = utcnow().replace(microsecond=0)      # MariaDB keeps whole seconds
    archive.events.publish("report.state", study_instance_uid=STUDY, state="final", username="li", report_id=1)
    assert reading.get(task.id).state == "final"
    (grant,) = archive.grants.for_study(STUDY)
    assert timedelta(hours=48) <= grant.expires_at - before < timedelta(hours=48, minutes=1)
    assert archive.grants.allows("li", STUDY) and not archive.grants.allows("li", STUDY, before + timedelta(hours=49))
    archive.events.publish("report.state", study_instance_uid=STUDY, state="amended", username="li", report_id=2)
    assert reading.get(task.id).state == "amended"


def test_only_arrivals_make_tasks(archive):
    observe = hook(archive.reading)
    observe(arrival(uid="1.2.3.6"), Origin("import"))
    observe(arrival(uid="1.2.3.7"), Origin("derived"))
    observe(arrival(uid="1.2.3.8"), Origin("stow"))
    assert [t.study_instance_uid for t in archive.reading.tasks()] == ["1.2.3.8"]


def test_upgrade_from_the_version_before_creates_the_reading_tables(archive):
    with archive.index.write():
        for model in (ReadingTask, ReadingRule):
            archive.db.execute_sql(f"DROP TABLE {model._meta.table_name}")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=VERSION_BEFORE)
    assert database.upgrade(archive.db) == (VERSION_BEFORE, database.LATEST_VERSION)
    assert archive.reading.create(STUDY).state == "unread"
