"""Nothing is acknowledged before it is on disk: the order of file fsync, directory
fsync, index commit and answer, on every store path and every entry; and each
instance is written once and its header parsed once on the way.

The archive runs in this process over an instrumented storage (its two fsync
methods record when they finish, and sleep first to make a missing wait show)
and a hook on the index database's commit. The answer is observed on the wire,
outside both peers, by a TCP proxy between the sender and the archive: dcmtk
storescu over DICOM, `requests` over HTTP for STOW-RS. An import is answered
when ``import_file`` returns.

For each entry, one instance goes through the five outcomes in turn: new,
identical resend (duplicate), different payload kept in quarantine
(keep-first), different payload replacing the stored copy (overwrite), and
identical resend putting back a stored copy found damaged (repair).
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests

from dsmpacs.archive import part10
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.models import Instance, Quarantine
from dsmpacs.archive.storage import Storage
from tests import factories as f
from tests.peers import dcmtk, tool
from tests.tcpproxy import TcpProxy

FSYNC_DELAY = 0.3          # long enough that a store not waiting for it answers first
PASSWORD = "correct horse battery"


class Recorder:
    """Events in the order they happened, across threads."""

    def __init__(self):
        self.events: list[tuple[int, str, object]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def add(self, kind: str, detail: object = None) -> None:
        with self._lock:
            self.events.append((next(self._seq), kind, detail))

    def clear(self) -> None:
        with self._lock:
            self.events.clear()

    def of(self, kind: str) -> list[tuple[int, object]]:
        with self._lock:
            return [(seq, detail) for seq, k, detail in self.events if k == kind]


class InstrumentedStorage(Storage):
    """The real storage; its fsyncs sleep first (file, directory) and are recorded when done.
    With ``hold_until`` N, every file fsync also waits until N files were spooled, so that
    N concurrent stores are all under way before the first can commit (group commit)."""

    def __init__(self, root: Path, recorder: Recorder, delays: tuple[float, float]):
        super().__init__(root)
        self.recorder, (self.file_delay, self.dir_delay) = recorder, delays
        self.hold_until = 0

    def _fsync_file(self, fd: int) -> None:
        inode = os.fstat(fd).st_ino          # names change while this runs; the inode does not
        deadline = time.monotonic() + 60     # a bound against a hung test only
        while len(self.recorder.of("spool")) < self.hold_until and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(self.file_delay)
        super()._fsync_file(fd)
        self.recorder.add("file-fsync", inode)

    def _fsync_dir(self, directory: Path) -> None:
        time.sleep(self.dir_delay)
        super()._fsync_dir(directory)
        self.recorder.add("dir-fsync", Path(directory))

    def spool(self, suffix: str = ".part"):
        writer = super().spool(suffix)
        self.recorder.add("spool", os.stat(writer.name).st_ino)
        return writer


@contextmanager
def instrumented(archive, recorder: Recorder,
                 delays: tuple[float, float] = (FSYNC_DELAY, FSYNC_DELAY)) -> Iterator[InstrumentedStorage]:
    """Swap in the instrumented storage and hook the index commit, recording what the
    commit made visible for the instance under test (``recorder.uid``)."""
    storage = InstrumentedStorage(archive.storage.root, recorder, delays)
    archive.storage = archive.ingest.storage = storage
    db = archive.db
    original = db.commit
    inside = threading.local()

    def commit():
        result = original()
        if not getattr(inside, "busy", False) and getattr(recorder, "uid", None):
            inside.busy = True
            try:
                recorder.add("commit", state(recorder.uid))
            finally:
                inside.busy = False
        if not getattr(inside, "busy", False) and getattr(recorder, "uids", None):
            inside.busy = True
            try:       # which of the instances under test this commit made visible
                recorder.add("commit-many", frozenset(uid for (uid,) in Instance.select(
                    Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(recorder.uids)).tuples()))
            finally:
                inside.busy = False
        return result

    # Every header parse, wherever the code calls it from: from a file (read_header) or
    # from the bytes a small file's spool kept (parse_header, which read_header itself
    # calls inside part10: that call is the same parse, not counted again).
    counted = {name: getattr(part10, name) for name in ("read_header", "parse_header")}
    holders = [(m, name) for m in list(sys.modules.values()) for name, real in counted.items()
               if getattr(m, "__name__", "").startswith("dsmpacs") and getattr(m, name, None) is real
               and not (m is part10 and name == "parse_header")]

    def counting(real):
        def counted_parse(source):
            recorder.add("parse", str(source) if isinstance(source, (str, Path)) else "bytes")
            return real(source)
        return counted_parse

    db.commit = commit
    for module, name in holders:
        setattr(module, name, counting(counted[name]))
    try:
        yield storage
    finally:
        db.commit = original
        for module, name in holders:
            setattr(module, name, counted[name])


def state(uid: str) -> tuple[str | None, int]:
    """What the index says of the instance: its file, and how many copies are quarantined."""
    path = Instance.select(Instance.path).where(Instance.sop_instance_uid == uid).scalar()
    return path, Quarantine.select().where(Quarantine.sop_instance_uid == uid).count()


def check_order(archive, recorder: Recorder, uid: str, before: tuple, outcome: str) -> None:
    """file fsync < directory fsync < commit < answer, for the file this outcome kept."""
    after = state(uid)
    files, dirs, answers = recorder.of("file-fsync"), recorder.of("dir-fsync"), recorder.of("answer")
    assert len(answers) == 1, f"{outcome}: answers seen {answers}"
    answer = answers[0][0]
    synced = [(seq, inode) for seq, inode in files if seq < answer]
    assert len(synced) == 1, f"{outcome}: answered before the file's fsync: {recorder.events}"
    file_fsync, inode = synced[0]
    # Written once (the file spooled as it arrived is the file fsynced), parsed once.
    assert [i for _, i in recorder.of("spool")] == [inode], f"{outcome}: {recorder.events}"
    assert len(recorder.of("parse")) == 1, f"{outcome}: {recorder.of('parse')}"
    if outcome == "duplicate":
        assert after == before, "an identical resend changes nothing in the index"
        return
    changes = [seq for seq, seen in recorder.of("commit") if seen == after]
    assert after != before and changes, f"{outcome}: no commit recorded it: {recorder.events}"
    commit = changes[0]
    kept = archive.storage.path(after[0]) if outcome != "quarantine" else \
        sorted(archive.storage.quarantine_dir.iterdir(), key=os.path.getmtime)[-1]
    assert kept.stat().st_ino == inode, f"{outcome}: the fsynced file is the one kept"
    dir_fsync = [seq for seq, d in dirs if d == kept.parent]
    assert dir_fsync, f"{outcome}: its directory {kept.parent} was never fsynced: {recorder.events}"
    order = {"file fsync": file_fsync, "directory fsync": dir_fsync[0], "commit": commit,
             "answer": answer}
    assert file_fsync < dir_fsync[0] < commit < answer, \
        f"{outcome}: wrong order {sorted(order, key=order.get)}; events {recorder.events}"


def shut_down(listeners) -> None:
    """Stop the listener once every association it served has ended: their threads
    still record the association in the index after the peer left, and must not
    outlive the test's database."""
    for server in listeners:
        for assoc in list(server.ae.active_associations):
            assoc.join(30)
            assoc.dul.join(30)
    listeners.shutdown()


# --- the three entries: each sends one file and records the answer ---------------------

class DicomEntry:
    """dcmtk storescu -> TCP proxy -> the archive's DICOM listener in this process."""

    def __init__(self, archive, settings, recorder: Recorder):
        from dsmpacs.dicom import server as dicom_server

        self.recorder = recorder
        self.server = dicom_server.start(settings, archive)
        self.proxy = TcpProxy(("127.0.0.1", self.server.plain.server_address[1]),
                              on_reply=self._reply).start()

    def _reply(self, data: bytes) -> None:
        if data[:1] == b"\x04":             # P-DATA-TF: the C-STORE response
            self.recorder.add("answer")

    def send(self, path: Path) -> str:
        done = dcmtk("storescu", "-v", "-aec", "DSMPACS", "127.0.0.1", str(self.proxy.port), str(path))
        return done.stderr

    def close(self) -> None:
        self.proxy.stop()
        shut_down(self.server)


class StowEntry:
    """requests -> TCP proxy -> the web app in this process (werkzeug's HTTP server)."""

    def __init__(self, archive, settings, recorder: Recorder):
        from werkzeug.serving import make_server

        from dsmpacs.archive.users import Users
        from dsmpacs.web.app import create_app

        Users(archive.index).add("stow1", PASSWORD, "radiologist")
        self.recorder = recorder
        self.http = make_server("127.0.0.1", 0, create_app(settings, archive), threaded=True)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.proxy = TcpProxy(("127.0.0.1", self.http.server_port), on_reply=self._reply).start()
        self.replied = False

    def _reply(self, data: bytes) -> None:
        if data.startswith(b"HTTP/") and not self.replied:
            self.replied = True
            self.recorder.add("answer")

    def send(self, path: Path) -> str:
        self.replied = False
        body = (b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes()
                + b"\r\n--b0undary--\r\n")
        response = requests.post(f"http://127.0.0.1:{self.proxy.port}/dicom-web/studies", data=body,
                                 headers={"Content-Type": 'multipart/related; type="application/dicom"; '
                                                          "boundary=b0undary",
                                          "Connection": "close"},
                                 auth=("stow1", PASSWORD), timeout=30)
        return f"{response.status_code} {response.text}"

    def close(self) -> None:
        self.proxy.stop()
        self.http.shutdown()


class ImportEntry:
    def __init__(self, archive, settings, recorder: Recorder):
        self.archive, self.recorder = archive, recorder

    def send(self, path: Path) -> str:
        result = self.archive.ingest.import_file(path, Origin("import"))
        self.recorder.add("answer")
        return result.outcome.value

    def close(self) -> None:
        pass


ENTRIES = {"c-store": DicomEntry, "stow-rs": StowEntry, "import": ImportEntry}
# What each entry answers for new, duplicate, quarantine, overwrite and repair.
ANSWERS = {
    "c-store": ["(Success)", "(Success)", "(Error: CannotUnderstand)", "(Success)", "(Success)"],
    "stow-rs": ["200 ", "200 ", "409 ", "200 ", "200 "],
    "import": ["stored", "duplicate", "conflict", "replaced", "repaired"],
}


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_outcome_waits_for_fsync_before_commit_and_answer(archive, settings, tmp_path, entry):
    recorder = Recorder()
    with instrumented(archive, recorder):
        sender = ENTRIES[entry](archive, settings, recorder)
        try:
            first = f.secondary_capture(size=16)
            uid = recorder.uid = str(first.SOPInstanceUID)
            steps = [("new", "keep-first", f.write(first, tmp_path / "a.dcm")),
                     ("duplicate", "keep-first", tmp_path / "a.dcm"),
                     ("quarantine", "keep-first", f.write(f.secondary_capture(size=16, sop_uid=uid),
                                                          tmp_path / "b.dcm")),
                     ("overwrite", "overwrite", f.write(f.secondary_capture(size=16, sop_uid=uid),
                                                        tmp_path / "c.dcm")),
                     ("repair", "keep-first", tmp_path / "c.dcm")]
            for (outcome, policy, path), expected in zip(steps, ANSWERS[entry]):
                archive.ingest.duplicate_policy = policy
                if outcome == "repair":         # the stored copy loses its tail on disk
                    os.truncate(archive.storage.path(state(uid)[0]), 100)
                before = state(uid)
                recorder.clear()
                answer = sender.send(path)
                assert expected in answer, f"{outcome}: {answer}"
                check_order(archive, recorder, uid, before, outcome)
        finally:
            sender.close()


def test_overwrite_with_slow_fsync_is_durable_before_commit_and_answer(archive, settings, tmp_path):
    """The reported hole: with the file's fsync slowed by 1 s, the replacement was
    committed and answered before its file reached the disk, the old copy already deleted."""
    recorder = Recorder()
    archive.ingest.duplicate_policy = "overwrite"
    with instrumented(archive, recorder, delays=(1.0, 0.0)):
        sender = DicomEntry(archive, settings, recorder)
        try:
            first = f.secondary_capture(size=16)
            uid = recorder.uid = str(first.SOPInstanceUID)
            assert "Success" in sender.send(f.write(first, tmp_path / "a.dcm"))
            old = state(uid)
            recorder.clear()
            started = time.monotonic()
            answer = sender.send(f.write(f.secondary_capture(size=16, sop_uid=uid), tmp_path / "b.dcm"))
            assert "Received Store Response (Success)" in answer, answer
            check_order(archive, recorder, uid, old, "overwrite")
            # The slowed fsync lies between the store and its answer.
            assert time.monotonic() - started >= 1.0
            assert not archive.storage.path(old[0]).exists(), "the old copy goes after the commit"
        finally:
            sender.close()


# --- group commit: several associations at once --------------------------------------

class ConcurrentSenders:
    """One DICOM listener in this process, and one TCP proxy per sender, so each answer
    on the wire is known by its sender; the senders are dcmtk storescu processes
    started together."""

    def __init__(self, archive, settings, recorder: Recorder, count: int):
        from dsmpacs.dicom import server as dicom_server

        self.recorder = recorder
        self.server = dicom_server.start(settings, archive)
        port = self.server.plain.server_address[1]
        self.proxies = [TcpProxy(("127.0.0.1", port), on_reply=self._replied(i)).start()
                        for i in range(count)]

    def _replied(self, sender: int):
        def reply(data: bytes) -> None:
            if data[:1] == b"\x04":
                self.recorder.add("answer", sender)
        return reply

    def send(self, paths: list[Path]) -> list[str]:
        env = dict(os.environ, TCP_NODELAY="1")
        procs = [subprocess.Popen([tool("storescu"), "-v", "-aec", "DSMPACS", "127.0.0.1", str(proxy.port),
                                   str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env=env) for proxy, path in zip(self.proxies, paths)]
        return [proc.communicate(timeout=120)[0] for proc in procs]

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
        shut_down(self.server)


SENDERS = 4


def _send_together(archive, settings, tmp_path, recorder: Recorder) -> tuple[list[str], list[str]]:
    datasets = [f.secondary_capture(size=16) for _ in range(SENDERS)]
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    recorder.uids = uids
    paths = [f.write(ds, tmp_path / f"s{i}.dcm") for i, ds in enumerate(datasets)]
    archive.storage.hold_until = SENDERS
    commits = archive.index.commits
    commits._commit = _first_batch_held(commits, SENDERS - 1)
    senders = ConcurrentSenders(archive, settings, recorder, SENDERS)
    try:
        return uids, senders.send(paths)
    finally:
        senders.close()
        del commits._commit


def _first_batch_held(commits, others: int):
    """The group commit's leader part, whose first call waits (10 s at most) until
    ``others`` stores are queued behind it, which then share the next transaction.
    Each store fsyncs before it queues (storage.SyncOnWait), so a leader's transaction
    is over in about a millisecond; on a loaded machine the other stores, released
    together by the fsync hold, could each arrive after it and lead alone (CI saw
    four transactions for four stores)."""
    real, first = commits._commit, [True]

    def held(batch):
        if first:
            first.clear()
            deadline = time.monotonic() + 10
            while len(commits._queue) < others and time.monotonic() < deadline:
                time.sleep(0.005)
        return real(batch)
    return held


def test_group_commit_answers_each_sender_after_its_fsyncs_and_the_shared_commit(archive, settings,
                                                                               tmp_path):
    """Four associations at once: their rows commit together (fewer commits than
    stores), and still no answer precedes its own file's fsync, its directory's fsync
    or the commit that made its row visible."""
    tool("storescu")
    recorder = Recorder()
    with instrumented(archive, recorder, delays=(0.2, 0.2)):
        uids, outputs = _send_together(archive, settings, tmp_path, recorder)
        for out in outputs:
            assert "Received Store Response (Success)" in out, out
        commits = recorder.of("commit-many")
        # The commits that made instances under test visible (later ones, of other rows, see them too).
        growing = [seen for (_, seen), (_, before) in zip(commits, [(0, frozenset())] + commits)
                   if seen != before]
        assert len(growing) < SENDERS, f"no two stores shared a commit: {growing}"
        answers = dict((sender, seq) for seq, sender in recorder.of("answer"))
        files, dirs = dict((i, seq) for seq, i in recorder.of("file-fsync")), recorder.of("dir-fsync")
        for sender, uid in enumerate(uids):
            kept = archive.storage.path(state(uid)[0])
            file_fsync = files[kept.stat().st_ino]
            dir_fsync = [seq for seq, d in dirs if d == kept.parent and seq > file_fsync]
            commit = next(seq for seq, seen in commits if uid in seen)
            assert file_fsync < dir_fsync[0] < commit < answers[sender], \
                f"sender {sender}: wrong order; events {recorder.events}"


def test_a_failed_group_commit_answers_every_waiting_store_and_leaves_no_orphan(archive, settings,
                                                                               tmp_path):
    """The shared commit fails (a disk error in the index): every store of the batch is
    answered 0xA701, none is indexed, and none of their files stays in the archive."""
    import peewee

    tool("storescu")
    recorder = Recorder()
    with instrumented(archive, recorder, delays=(0.1, 0.1)):
        db = archive.db
        hooked = db.commit

        def failing_commit():
            raise peewee.OperationalError("disk I/O error")

        db.commit = failing_commit
        begun = archive.index.commits.attempts
        try:
            uids, outputs = _send_together(archive, settings, tmp_path, recorder)
        finally:
            db.commit = hooked
        for out in outputs:
            assert "Received Store Response (Refused: OutOfResources)" in out, out
        attempts = archive.index.commits.attempts - begun
        assert 0 < attempts < SENDERS, f"{attempts} transactions for {SENDERS} stores: no batch was shared"
        assert Instance.select().where(Instance.sop_instance_uid.in_(uids)).count() == 0
        root = archive.storage.root
        left = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(("sqlite3", "-wal", "-shm"))
                and archive.storage.quarantine_dir not in p.parents]
        assert left == [], f"files left behind: {left}"
