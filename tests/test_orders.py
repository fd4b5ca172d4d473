"""Orders (archive/orders.py), their CSV import (archive/ordercsv.py) and the
matching of arrived studies (archive/reconcile.py), on SQLite and MariaDB.
The Modality Worklist SCP and the web pages against a real server:
tests/test_worklist.py."""
from __future__ import annotations

import re

import pytest

from dsmpacs.archive import database
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.models import Order, OrderArrival, PerformedStep, SchemaVersion
from dsmpacs.archive.ordercsv import ImportRefused, import_csv
from dsmpacs.archive.orders import OrderError, OrderInput, Orders, State, WorklistFilter
from dsmpacs.archive.reconcile import LINKED, MATCHED, PATIENT_DIFFERS, UNKNOWN_ORDER, Reconciler
from dsmpacs.settings import Settings
from tests import factories as f


@pytest.fixture(scope="module")
def shared_archive(module_database_url, tmp_path_factory):
    """One index per module and database: a fresh MariaDB schema costs seconds."""
    from dsmpacs.archive import Archive

    settings = Settings.load(data_dir=tmp_path_factory.mktemp("orders"), env={}, overrides={
        "database_url": module_database_url, "min_free_mb": 0, "unknown_ae_may_store": True})
    arc = Archive(settings)
    arc.open(upgrade=True)
    yield arc
    arc.close()


@pytest.fixture
def archive(shared_archive):
    """The shared archive without the orders of the test before."""
    with shared_archive.index.write():
        PerformedStep.delete().execute()
        OrderArrival.delete().execute()
        Order.delete().execute()
    return shared_archive


def order(**kw) -> OrderInput:
    values = dict(patient_id="P100", patient_name="王小明", birth_date="1970-03-04", sex="m",
                  procedure_description="CT head", scheduled_date="2026-12-07", scheduled_time="09:30",
                  modality="ct", station_ae="CT1", priority="stat", requesting_physician="Li Hua")
    return OrderInput(**{**values, **kw})


def test_an_order_is_registered_with_a_generated_accession_number(archive):
    orders = Orders(archive.index)
    created = orders.create(order(), actor="reg1")
    assert len(created.accession_number) == 14 and created.accession_number.isdigit()
    assert (created.patient_name, created.birth_date, created.sex) == ("王小明", "19700304", "M")
    assert (created.modality, created.priority, created.scheduled_time) == ("CT", "STAT", "093000")
    assert created.requesting_physician == "Li^Hua"
    assert created.procedure_id == created.step_id == created.accession_number
    assert created.state is State.SCHEDULED and created.study_instance_uid.startswith("2.25.")
    second = orders.create(order(accession_number="A-1"))
    assert second.accession_number == "A-1"
    with pytest.raises(OrderError) as dup:
        orders.create(order(accession_number="A-1"))
    assert dup.value.code == "duplicate_accession"
    for bad, code in ((dict(priority="URGENT"), "bad_priority"), (dict(scheduled_date="2026-02-30"), "bad_date"),
                      (dict(patient_id=""), "required"), (dict(modality="C T"), "bad_modality"),
                      (dict(patient_id="A\\B"), "bad_characters"), (dict(scheduled_time="25:00"), "bad_time")):
        with pytest.raises(OrderError) as exc:
            orders.create(order(**bad))
        assert exc.value.code == code, bad
    assert [o.accession_number for o in orders.list()] == ["A-1", created.accession_number]


def test_a_scheduled_order_is_changed_in_place_and_a_started_one_is_not(archive):
    """Orders.change (an HL7 order change, hl7v2/): new values, the same accession number,
    step and study UID; once started, the change is refused."""
    orders = Orders(archive.index)
    created = orders.create(order(accession_number="CH-1"))
    changed = orders.change(created.id, order(patient_name="Wang Xiaoming", procedure_description="CT chest",
                                              scheduled_time="14:00", modality="MR", accession_number="IGNORED"))
    assert (changed.accession_number, changed.study_instance_uid, changed.step_id) == (
        "CH-1", created.study_instance_uid, created.step_id)
    assert (changed.patient_name, changed.procedure_description, changed.scheduled_time, changed.modality) == (
        "Wang^Xiaoming", "CT chest", "140000", "MR")
    assert [o.accession_number for o in orders.worklist(WorklistFilter(patient_name="wang*"))] == ["CH-1"]
    with pytest.raises(OrderError) as bad:
        orders.change(created.id, order(modality=""))
    assert bad.value.code == "required"
    with archive.index.write():
        Order.update(state=State.IN_PROGRESS.value).where(Order.id == created.id).execute()
    with pytest.raises(OrderError) as started:
        orders.change(created.id, order())
    assert started.value.code == "bad_transition"
    with pytest.raises(OrderError) as missing:
        orders.change(created.id + 1000, order())
    assert missing.value.code == "not_found"


def test_worklist_matching(archive):
    orders = Orders(archive.index)
    a = orders.create(order(accession_number="W1"))
    b = orders.create(order(accession_number="W2", patient_id="P200", patient_name="Zhang^San=张^三",
                            scheduled_date="2026-12-08", station_ae="MR1", modality="MR"))
    c = orders.create(order(accession_number="W3", scheduled_date="2026-12-09"))
    orders.set_state(c.id, State.DISCONTINUED)

    def found(**kw):
        return [o.accession_number for o in orders.worklist(WorklistFilter(**kw))]

    assert found() == ["W1", "W2"]                       # the discontinued order is not offered
    assert found(station_ae="CT1") == ["W1"]
    assert found(date="20261208") == ["W2"]
    assert found(date="20261201-20261207") == ["W1"]
    assert found(modality="MR\\CT") == ["W1", "W2"]
    assert found(patient_name="王*") == ["W1"]
    assert found(patient_name="张*") == ["W2"]
    assert found(patient_name="zhang*") == ["W2"]
    assert found(patient_id="P2*") == ["W2"]
    assert found(accession_number="W2") == ["W2"]
    assert found(time="0900-1000") == ["W1", "W2"]
    assert found(states=(State.DISCONTINUED,)) == ["W3"]
    assert b.id != a.id


CSV = ("patient_id,patient_name,birth_date,sex,procedure_description,scheduled_date,scheduled_time,"
       "modality,station_ae,priority,accession_number\n"
       "C1,李^雷,1980-01-02,M,DSA cerebral,2026-12-07,08:00,XA,ANGIO1,HIGH,CSV-1\n"
       "C2,Han^Meimei,,F,CT head,2026-13-01,09:00,CT,CT1,ROUTINE,CSV-2\n"
       "C3,韩^梅梅,,F,MR head,2026-12-07,10:00,MR,MR1,,\n")


def test_csv_import_reports_each_bad_line(archive):
    orders = Orders(archive.index)
    result = import_csv(orders, ("\ufeff" + CSV).encode("utf-8"), actor="reg1")
    assert [o.patient_id for o in result.created] == ["C1", "C3"]
    assert [(e.line, e.code, e.field) for e in result.errors] == [(3, "bad_date", "scheduled_date")]
    assert result.created[0].patient_name == "李^雷" and result.created[0].priority == "HIGH"
    with pytest.raises(ImportRefused) as header:
        import_csv(orders, b"patient,name\nx,y\n")
    assert header.value.code == "bad_header"
    with pytest.raises(ImportRefused) as encoding:
        import_csv(orders, CSV.encode("gb18030"))
    assert encoding.value.code == "not_utf8"
    with pytest.raises(ImportRefused) as large:
        import_csv(orders, CSV.encode() + b"x" * 2**20)
    assert large.value.code == "too_large"


def test_arrivals_are_matched_by_accession_number_and_patient_id(archive, tmp_path):
    orders = Orders(archive.index)
    target = orders.create(order(accession_number="ARR-1", patient_id="P100"))
    other = orders.create(order(accession_number="ARR-2", patient_id="P300"))

    def store(name, accession, patient_id, count=1, origin=Origin("dicom", "MODALITY")):
        study = None
        for i in range(count):
            ds = f.secondary_capture(size=8, accession=accession, study_uid=study,
                                     patient=f.Patient(name="WANG^XIAOMING", patient_id=patient_id))
            study = ds.StudyInstanceUID
            result = archive.ingest.import_file(f.write(ds, tmp_path / f"{name}{i}.dcm"), origin)
            assert result.outcome.archived, result
        return study

    matched = store("m", "ARR-1", "P100", count=2)
    differs = store("d", "ARR-2", "P999")
    unknown = store("u", "NOPE", "P100")
    store("none", "", "P100")                 # no accession number: not recorded
    store("old", "ARR-1", "P100", origin=Origin("import"))   # history, not an arrival
    reconciler = Reconciler(archive.index)
    outcomes = {a.study_instance_uid: a.outcome for a in reconciler.arrivals(unresolved_only=False)}
    assert outcomes == {matched: MATCHED, differs: PATIENT_DIFFERS, unknown: UNKNOWN_ORDER}
    now = orders.get(target.id)
    assert now.state is State.IN_PROGRESS and now.matched_studies == (matched,)
    assert orders.get(other.id).state is State.SCHEDULED
    waiting = {a.study_instance_uid for a in reconciler.arrivals()}
    assert waiting == {differs, unknown}
    arrival = next(a for a in reconciler.arrivals() if a.study_instance_uid == unknown)
    with pytest.raises(OrderError):
        reconciler.link(arrival.id, "NO-SUCH", actor="root")
    linked = reconciler.link(arrival.id, "ARR-2", actor="root")
    assert (linked.outcome, linked.order_accession, linked.resolved_by) == (LINKED, "ARR-2", "root")
    assert orders.get(other.id).state is State.IN_PROGRESS
    assert orders.get(other.id).matched_studies == (unknown,)
    assert {a.study_instance_uid for a in reconciler.arrivals()} == {differs}
    # images first, order later (an emergency): registering the order matches them
    early = store("e", "LATE-1", "P500")
    assert reconciler.get(next(a.id for a in reconciler.arrivals() if a.study_instance_uid == early)).outcome \
        == UNKNOWN_ORDER
    late = orders.create(order(accession_number="LATE-1", patient_id="P500"))
    assert late.state is State.IN_PROGRESS and late.matched_studies == (early,)
    assert {a.study_instance_uid for a in reconciler.arrivals()} == {differs}


def test_performed_steps_move_the_order_along(archive):
    from dsmpacs.archive.performed import COMPLETED, DISCONTINUED, IN_PROGRESS, PerformedSteps, StepError

    orders, steps = Orders(archive.index), PerformedSteps(archive.index)
    target = orders.create(order(accession_number="PPS-1"))
    # found by its Scheduled Procedure Step ID when the modality left the accession number out
    step = steps.started("1.2.3.1", IN_PROGRESS, accessions=[""], step_ids=["PPS-1"], calling_ae="CT1")
    assert step.order_id == target.id and orders.get(target.id).state is State.IN_PROGRESS
    unscheduled = steps.started("1.2.3.2", IN_PROGRESS, accessions=["NONE"], step_ids=[])
    assert unscheduled.order_id is None
    with pytest.raises(StepError) as not_new:
        steps.started("1.2.3.3", COMPLETED, accessions=["PPS-1"], step_ids=[])
    assert not_new.value.code == "bad-status"
    assert steps.update("1.2.3.1", None).status == IN_PROGRESS          # other attributes only
    assert steps.update("1.2.3.1", DISCONTINUED).status == DISCONTINUED
    assert orders.get(target.id).state is State.DISCONTINUED
    with pytest.raises(StepError) as final:
        steps.update("1.2.3.1", COMPLETED)
    assert final.value.code == "final"


def test_upgrade_from_the_version_before_adds_the_order_tables(archive):
    """Version 7 (m0007_orders) adds the order tables to an index of version 6."""
    before = 6
    with archive.index.write():
        for table in ("performed_step", "order_arrival", "orders"):
            archive.db.execute_sql(f"DROP TABLE {table}")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=before)
    assert database.upgrade(archive.db) == (before, database.LATEST_VERSION)
    assert Orders(archive.index).create(order(accession_number="UP-1")).accession_number == "UP-1"


def test_conformance_statement_lists_the_worklist_keys_and_statuses():
    from pathlib import Path

    from pydicom.datadict import dictionary_description

    from dsmpacs.dicom import worklist
    from tests.test_handler_statuses import code_statuses, docstring_statuses

    doc = (Path(__file__).resolve().parent.parent / "docs" / "conformance.md").read_text()
    section = doc[doc.index("## 11. Modality Worklist SCP"):doc.index("## 12. ")]
    table = section[section.index("### 11.4"):]
    listed = {int(code, 16) for code in re.findall(r"^\| 0x([0-9A-F]{4}) \|", table, re.M)}
    assert listed == docstring_statuses(worklist.handle_worklist) == code_statuses(worklist.handle_worklist)
    prose = " ".join(section.split())
    missing = [k for k in worklist.SUPPORTED_KEYS if dictionary_description(k) not in prose]
    assert missing == []
    matching = section[section.index("### 11.1"):section.index("### 11.2")]
    for keyword in worklist.MATCHING:
        assert dictionary_description(keyword) in matching, keyword


def test_conformance_statement_lists_the_mpps_statuses():
    from pathlib import Path

    from dsmpacs.dicom import mpps
    from tests.test_handler_statuses import code_statuses, docstring_statuses

    doc = (Path(__file__).resolve().parent.parent / "docs" / "conformance.md").read_text()
    section = doc[doc.index("## 12. Modality Performed Procedure Step SCP"):]
    for heading, handler in (("### 12.1", mpps.handle_n_create), ("### 12.2", mpps.handle_n_set)):
        table = section[section.index(heading) + len(heading):].split("\n### ", 1)[0]
        listed = {int(code, 16) for code in re.findall(r"^\| 0x([0-9A-F]{4}) \|", table, re.M)}
        assert listed == docstring_statuses(handler) == code_statuses(handler), heading


def test_every_order_error_has_its_text_in_both_languages():
    """The pages show an OrderError or a CSV line error by its code and field."""
    from pathlib import Path

    from dsmpacs.web.i18n import LANGUAGES, catalog

    package = Path(__file__).resolve().parent.parent / "package" / "dsmpacs" / "archive"
    source = "".join((package / name).read_text() for name in ("orders.py", "reconcile.py", "ordercsv.py"))
    raised = set(re.findall(r'OrderError\("([a-z_]+)", (?:"([a-z_]*)"|\w+)', source))
    codes = {code for code, _ in raised} | {"cell_count"}
    fields = {name for _, name in raised if name} | set(OrderInput.names())
    assert {"required", "bad_date", "duplicate_accession", "unknown_accession"} <= codes
    for lang in LANGUAGES:
        texts = catalog(lang)
        assert [c for c in codes if f"orders.error.{c}" not in texts] == [], lang
        assert [f for f in fields if f"orders.field.{f}" not in texts] == [], lang
