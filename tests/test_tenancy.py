"""Institutions sharing one archive (archive/visibility.py, archive/institutions.py)
on SQLite and MariaDB: where an arriving study lands, what a user or a peer sees,
the study-list query under a scope, and the upgrade that keeps a single-room
archive as it was."""
from __future__ import annotations

import time

import pytest

from dsmpacs.archive import database
from dsmpacs.archive.ingest import Origin, StoreOutcome
from dsmpacs.archive.institutions import InstitutionError, Institutions
from dsmpacs.archive.models import (
    DEFAULT_INSTITUTION_ID,
    Institution,
    InstitutionAlias,
    Membership,
    SchemaVersion,
    Study,
)
from dsmpacs.archive.peers import Peer, PeerRegistry
from dsmpacs.archive.users import Users
from dsmpacs.archive.visibility import Scope
from tests import factories as f

# The schema version before institutions; the integrator renumbers at merge.
VERSION_BEFORE = 9


def store(archive, tmp_path, name, *, origin=Origin("dicom", "MODALITY"), institution_name=None):
    ds = f.secondary_capture(size=8, accession=name[:16])
    if institution_name:
        ds.InstitutionName = institution_name
    result = archive.ingest.import_file(f.write(ds, tmp_path / f"{name}.dcm"), origin)
    assert result.archived, result
    return str(ds.StudyInstanceUID)


@pytest.fixture
def world(archive, tmp_path):
    """Institutions A and C, a peer bound to each, users of each, one study apiece."""
    inst = Institutions(archive.index)
    a, c = inst.create("a", "Hospital A"), inst.create("c", "Hospital C")
    peers = PeerRegistry(archive.index)
    peers.add(Peer("angio-a", "ANGIO_A", "127.0.0.1", 104))
    peers.add(Peer("ws-c", "WS_C", "127.0.0.1", 105))
    inst.bind_ae("angio-a", "a")
    inst.bind_ae("ws-c", "c")
    users = Users(archive.index)
    users.add("alice", "correct horse battery", "radiologist", institution=a.id)
    users.add("carol", "correct horse battery", "radiologist", institution=c.id)
    users.add("root", "correct horse battery", "admin")
    study_a = store(archive, tmp_path, "sa", origin=Origin("dicom", "ANGIO_A"))
    study_c = store(archive, tmp_path, "sc", origin=Origin("dicom", "WS_C"))
    return inst, a, c, study_a, study_c


def test_a_study_lands_by_sending_ae_then_alias_then_default(archive, tmp_path, world):
    inst, a, c, study_a, study_c = world
    assert inst.institution_of(study_a) == a.id and inst.institution_of(study_c) == c.id
    inst.add_alias("  hospital  C Radiology ", "c")
    by_alias = store(archive, tmp_path, "al", origin=Origin("dicom", "UNKNOWN"),
                     institution_name="HOSPITAL C radiology")
    assert inst.institution_of(by_alias) == c.id
    # The binding wins over the name the modality writes.
    bound = store(archive, tmp_path, "bd", origin=Origin("dicom", "ANGIO_A"),
                  institution_name="Hospital C Radiology")
    assert inst.institution_of(bound) == a.id
    nowhere = store(archive, tmp_path, "nw", origin=Origin("dicom", "UNKNOWN"), institution_name="Elsewhere")
    assert inst.institution_of(nowhere) == DEFAULT_INSTITUTION_ID
    # STOW names the institution itself.
    stowed = store(archive, tmp_path, "st", origin=Origin("stow", peer="carol", institution=c.id))
    assert inst.institution_of(stowed) == c.id


def test_a_bound_modality_cannot_add_to_another_institutions_study(archive, tmp_path, world):
    """C's workstation sending an instance of A's study is refused (0x0124 over DICOM)
    and nothing is stored; A's own modality and an unbound sender may add to it."""
    inst, a, c, study_a, study_c = world

    def send(name, calling_ae):
        ds = f.secondary_capture(size=8, study_uid=study_a)
        return archive.ingest.import_file(f.write(ds, tmp_path / f"{name}.dcm"), Origin("dicom", calling_ae)), ds

    refused, ds = send("mix", "WS_C")
    assert refused.outcome is StoreOutcome.REFUSED and "outside the sender's institution" in refused.message
    assert archive.index.find_instance(str(ds.SOPInstanceUID)) is None
    assert list(archive.storage.root.rglob("*.dcm")) and not any(
        str(ds.SOPInstanceUID) in p.read_bytes().decode("latin-1") for p in archive.storage.root.rglob("*.dcm"))
    for name, sender in (("own", "ANGIO_A"), ("unbound", "UNKNOWN")):
        added, ds = send(name, sender)
        assert added.archived and archive.index.find_instance(str(ds.SOPInstanceUID)) is not None
    assert inst.institution_of(study_a) == a.id


def test_users_and_peers_see_their_institution_plus_grants(archive, world):
    inst, a, c, study_a, study_c = world
    carol = Scope.for_user(archive.index, archive.grants, "carol")
    assert carol.institutions == {c.id} and not carol.is_everything
    assert carol.allows(study_c) and not carol.allows(study_a)
    with archive.index.read():
        listed = {s.study_instance_uid for s in carol.restrict(Study.select())}
    assert listed == {study_c}
    assert Scope.for_user(archive.index, archive.grants, "root").is_everything
    assert not Scope.for_user(archive.index, archive.grants, "nobody").allows(study_c)
    # A grant adds exactly that study.
    archive.grants.grant("carol", study_a, reason="manual", granted_by="root")
    carol = Scope.for_user(archive.index, archive.grants, "carol")
    assert carol.allows(study_a)
    with archive.index.read():
        assert {s.study_instance_uid for s in carol.restrict(Study.select())} == {study_a, study_c}
    # Peers: bound ones see their institution, unbound and unknown ones everything.
    ws_c = Scope.for_ae(archive.index, "WS_C")
    assert ws_c.allows(study_c) and not ws_c.allows(study_a)
    assert Scope.for_ae(archive.index, "SOMEONE").is_everything
    inst.bind_ae("ws-c", None)
    assert Scope.for_ae(archive.index, "WS_C").is_everything
    # Moving a study moves who sees it.
    assert inst.move_study(study_c, "a") == (c.id, a.id)
    assert not Scope.for_user(archive.index, archive.grants, "carol").allows(study_c)
    assert Scope.for_user(archive.index, archive.grants, "alice").allows(study_c)


def test_memberships_and_refusals(archive, world):
    inst, a, c, *_ = world
    inst.add_member("alice", "c", "referring")
    assert {(m.institution_code, m.role) for m in inst.memberships_of("alice")} == {
        ("a", "radiologist"), ("c", "referring")}
    assert inst.default_for("alice") is None and inst.default_for("carol") == c.id
    assert inst.remove_member("alice", "c")
    for call in (lambda: inst.create("A b", "x"), lambda: inst.create("a", "again"),
                 lambda: inst.add_member("alice", "a", "boss"), lambda: inst.add_member("ghost", "a", "radiologist"),
                 lambda: inst.bind_ae("no-such-peer", "a"), lambda: inst.get("zzz")):
        with pytest.raises(InstitutionError):
            call()
    # New users without a named institution join the default one.
    Users(archive.index).add("dave", "correct horse battery", "viewer")
    assert [(m.institution_id, m.role) for m in inst.memberships_of("dave")] == [
        (DEFAULT_INSTITUTION_ID, "technologist")]


def test_upgrade_puts_every_study_and_user_in_the_default_institution(archive, tmp_path):
    users = Users(archive.index)
    users.add("old", "correct horse battery", "radiologist")
    uid = store(archive, tmp_path, "old")
    db = archive.db
    with archive.index.write():
        # Back to the schema before institutions.
        for model in (Membership, InstitutionAlias, Institution):
            db.execute_sql(f"DROP TABLE {model._meta.table_name}")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=VERSION_BEFORE)
    if database.is_mysql(db):
        for table in ("study", "orders"):
            db.execute_sql(f"ALTER TABLE {table} DROP INDEX {table}_institution")
            db.execute_sql(f"ALTER TABLE {table} DROP COLUMN institution")
        db.execute_sql("ALTER TABLE remote_ae DROP COLUMN institution")
    else:
        for table in ("study", "orders"):
            db.execute_sql(f"DROP INDEX {table}_institution")
            db.execute_sql(f"ALTER TABLE {table} DROP COLUMN institution")
        db.execute_sql("ALTER TABLE remote_ae DROP COLUMN institution")
    assert "institution" not in {c.name for c in db.get_columns("study")}
    assert database.upgrade(db) == (VERSION_BEFORE, database.LATEST_VERSION)
    inst = Institutions(archive.index)
    assert [(i.id, i.code, i.studies, i.members) for i in inst.all()] == [(DEFAULT_INSTITUTION_ID, "default", 1, 1)]
    scope = Scope.for_user(archive.index, archive.grants, "old")
    assert scope.allows(uid)
    with archive.index.read():
        assert [s.study_instance_uid for s in scope.restrict(Study.select())] == [uid]


def test_study_list_under_a_scope_stays_fast(archive, tmp_path, world):
    """A few thousand studies: the study list's own query (archive/browse.search_studies)
    with no scope (as before institutions) and as a user of one institution."""
    from dsmpacs.archive.browse import search_studies

    inst, a, c, *_ = world
    rows = [dict(patient=1, study_instance_uid=f"1.2.826.0.1.3680043.8.498.77.{i}",
                 study_date=f"2024{1 + i % 12:02d}{1 + i % 28:02d}", institution=(a.id, c.id)[i % 2])
            for i in range(4000)]
    with archive.index.write():
        for start in range(0, len(rows), 500):
            Study.insert_many(rows[start:start + 500]).execute()
    archive.grants.grant("carol", rows[0]["study_instance_uid"], reason="manual")
    carol = Scope.for_user(archive.index, archive.grants, "carol")

    def timed(scope, filters):
        search_studies(archive.index, filters, scope=scope)          # warm
        started = time.perf_counter()
        for _ in range(10):
            page = search_studies(archive.index, filters, page=3, scope=scope)
        return (time.perf_counter() - started) / 10, page

    figures = {}
    for label, filters in (("all", {}), ("by date", {"StudyDate": "20240301-20240630"})):
        before, everything = timed(None, filters)
        after, scoped = timed(carol, filters)
        assert len(everything.rows) == len(scoped.rows) == 25
        assert scoped.total < everything.total
        visible = {s.study_instance_uid for s in Study.select(Study.study_instance_uid)
                   .where((Study.institution == c.id) | (Study.study_instance_uid == rows[0]["study_instance_uid"]))}
        assert {r["StudyInstanceUID"] for r in scoped.rows} <= visible
        figures[label] = (before, after)
    print("study list page (25 of ~4000 studies): " + "; ".join(
        f"{label}: unscoped {b * 1000:.1f} ms, scoped {a * 1000:.1f} ms" for label, (b, a) in figures.items()))
    # The scope adds one indexed condition: the same order of cost, not a scan per row.
    for before, after in figures.values():
        assert after < max(before * 10, 0.05)


def test_orders_belong_to_the_registrars_institution(archive, world):
    """The worklist answers a modality bound to an institution only with its orders;
    the registration list shows a registrar only theirs."""
    from dsmpacs.archive.orders import OrderInput, Orders, WorklistFilter

    inst, a, c, *_ = world
    orders = Orders(archive.index)

    def order(accession, institution):
        return orders.create(OrderInput(patient_id=f"P-{accession}", patient_name="DOE^JANE",
                                        procedure_description="DSA", scheduled_date="20261206",
                                        modality="XA", accession_number=accession),
                             actor="reg", institution=institution)

    order("ORD-A", a.id)
    mine = order("ORD-C", c.id)
    order("ORD-D", None)
    seen = lambda scope: {o.accession_number for o in orders.worklist(WorklistFilter(), scope)}  # noqa: E731
    assert seen(Scope.for_ae(archive.index, "WS_C")) == {"ORD-C"}
    assert seen(Scope.for_ae(archive.index, "ANGIO_A")) == {"ORD-A"}
    assert seen(Scope.for_ae(archive.index, "UNBOUND")) == {"ORD-A", "ORD-C", "ORD-D"}
    carol = Scope.for_user(archive.index, archive.grants, "carol")
    assert [o.accession_number for o in orders.list(scope=carol)] == ["ORD-C"]
    from dsmpacs.archive.orders import OrderError, State
    with pytest.raises(OrderError):
        orders.set_state(orders.by_accession("ORD-A").id, State.DISCONTINUED, carol)
    assert orders.set_state(mine.id, State.DISCONTINUED, carol).state == "discontinued"


def test_admin_page_keeps_institutions_and_audits_a_moved_study(archive, client, world):
    from dsmpacs.archive.models import AuditEvent
    from tests.webclient import client_as, client_csrf

    inst, a, c, study_a, study_c = world
    client_as(client, archive, "admin", "boss")
    page = client.get("/admin/institutions", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Hospital C" in page.get_data(as_text=True)
    token = client_csrf(client, "/admin/institutions")

    def post(**form):
        return client.post("/admin/institutions", data={"csrf_token": token, **form})

    assert post(op="create", code="b", name="Hospital B").status_code == 302
    assert post(op="create", code="B B", name="x").status_code == 400
    assert post(op="member", username="carol", institution="b", role="referring").status_code == 302
    assert post(op="alias", name="Hospital B Radiology", institution="b").status_code == 302
    assert post(op="bind", peer="angio-a", institution="b").status_code == 302
    assert post(op="move", study_instance_uid=study_a, institution="b").status_code == 302
    assert post(op="move", study_instance_uid="1.2.3.4", institution="b").status_code == 400
    b = inst.get("b")
    assert inst.institution_of(study_a) == b.id
    assert ("carol", "b", "referring") in {(m.username, m.institution_code, m.role) for m in inst.members()}
    assert ("angio-a", "ANGIO_A", "b") in inst.bindings()
    with archive.index.read():
        moved = AuditEvent.get(AuditEvent.action == "study-move")
        assert moved.study_instance_uid == study_a and moved.actor == "boss"
        assert AuditEvent.select().where(AuditEvent.action == "institution-change").count() == 4
    # A user created for one institution is not also in the default one.
    token = client_csrf(client, "/admin/users")
    made = client.post("/admin/users", data={"csrf_token": token, "username": "cora", "role": "radiologist",
                                             "institution": str(c.id), "password": "correct horse battery"})
    assert made.status_code == 200, made.status_code
    assert [(m.institution_code, m.role) for m in inst.memberships_of("cora")] == [("c", "radiologist")]
    refused = client.post("/admin/users", data={"csrf_token": token, "username": "nowhere", "role": "viewer",
                                                "institution": "999", "password": "correct horse battery"})
    assert refused.status_code == 400 and inst.memberships_of("nowhere") == []
    # Not for anyone else.
    client.post("/logout", data={"csrf_token": token})
    client_as(client, archive, "radiologist", "rad9")
    assert client.get("/admin/institutions").status_code == 403


def test_a_referring_member_sees_only_what_the_referring_filter_lets_through(archive, world):
    """The sharing feature plugs its rule in; until then a referring member sees only grants."""
    from dsmpacs.archive import visibility

    inst, a, c, study_a, study_c = world
    inst.add_member("carol", "a", "referring")
    carol = Scope.for_user(archive.index, archive.grants, "carol")
    assert carol.referring == {a.id} and not carol.allows(study_a) and carol.allows(study_c)
    visibility.register_referring_filter(lambda username: Study.study_instance_uid == study_a)
    try:
        assert carol.allows(study_a)
        with archive.index.read():
            assert {s.study_instance_uid for s in carol.restrict(Study.select())} == {study_a, study_c}
    finally:
        visibility.register_referring_filter(None)
    assert not carol.allows(study_a)


def test_stow_by_a_member_of_several_institutions_must_name_one(archive, client, world, tmp_path):
    import base64

    from tests.test_dicomweb_http import stow_body

    inst, a, c, *_ = world
    inst.add_member("alice", "c", "radiologist")
    basic = {"Authorization": "Basic " + base64.b64encode(b"alice:correct horse battery").decode()}

    def stow(query=""):
        ds = f.secondary_capture(size=8)
        body, ctype = stow_body([f.write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")])
        answer = client.post(f"/dicom-web/studies{query}", data=body, headers={**basic, "Content-Type": ctype})
        return answer.status_code, str(ds.StudyInstanceUID)

    assert stow()[0] == 400
    assert stow("?institution=zz")[0] == 400
    status, uid = stow("?institution=c")
    assert status == 200 and inst.institution_of(uid) == c.id
    inst.create("b", "Hospital B")
    assert stow("?institution=b")[0] == 400          # not a member there
    inst.remove_member("alice", "c")
    status, uid = stow()
    assert status == 200 and inst.institution_of(uid) == a.id


def test_cli_user_add_names_the_institution(archive, settings, world):
    from click.testing import CliRunner

    from dsmpacs.cli import main

    inst, a, c, *_ = world
    base = ["--data-dir", str(settings.data_dir), "--set", f"database_url={settings.effective_database_url}"]
    runner = CliRunner()
    added = runner.invoke(main, [*base, "user", "add", "cleo", "--role", "radiologist", "--institution", "c",
                                 "--password-stdin"], input="correct horse battery\n")
    assert added.exit_code == 0, added.output
    assert [m.institution_code for m in inst.memberships_of("cleo")] == ["c"]
    refused = runner.invoke(main, [*base, "user", "add", "nobody", "--institution", "zz", "--password-stdin"],
                            input="correct horse battery\n")
    assert refused.exit_code == 1 and "no institution" in refused.output
