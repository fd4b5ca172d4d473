"""C-FIND benchmark: a study-level ``PatientName=ZHANG*`` query over DICOM.

Builds an index of 100,000 instances (about 20 per series, a few series per
study, one to three studies per patient, names drawn from common Chinese
surnames in the forms Chinese modalities send, plus some Western names) on
SQLite and on MariaDB, starts the real ``dsmpacs serve`` process on each, and
times the query over one association with pynetdicom (the median of repeated
runs) and end to end with dcmtk findscu (process start, association, query).
Orthanc, loaded with the first 10,000 of the same instances by C-STORE, answers
the same query in the same run.

    .venv/bin/python -m bench.find [--instances 100000] [--orthanc-instances 10000]

The index is filled by bulk INSERTs of the rows ``attributes.extract`` makes from
each series' header, exactly the columns the ingest path writes; storing 100,000
files through C-STORE would only measure ingest.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dsmpacs.archive import Archive  # noqa: E402
from dsmpacs.archive.attributes import Level, extract  # noqa: E402
from dsmpacs.archive.index import patient_key  # noqa: E402
from dsmpacs.archive.models import Instance, Patient, Series, Study, utcnow  # noqa: E402
from dsmpacs.archive.peers import Peer, PeerRegistry  # noqa: E402
from dsmpacs.archive.query import Query, Search  # noqa: E402
from dsmpacs.dicom.scu import HANDLERS  # noqa: E402
from dsmpacs.settings import Settings  # noqa: E402

XA = "1.2.840.10008.5.1.4.1.1.12.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
CALLING_AE = "BENCHSCU"
PATTERN = "ZHANG*"
RETURN_KEYS = ["PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyTime",
               "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
               "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyInstanceUID"]

# (pinyin, hanzi, weight in percent): the most common Chinese surnames.
SURNAMES = [("Wang", "王", 7.1), ("Li", "李", 7.0), ("Zhang", "张", 6.7), ("Liu", "刘", 5.4),
            ("Chen", "陈", 4.5), ("Yang", "杨", 3.1), ("Huang", "黄", 2.2), ("Zhao", "赵", 2.2),
            ("Wu", "吴", 2.0), ("Zhou", "周", 1.9), ("Xu", "徐", 1.5), ("Sun", "孙", 1.5),
            ("Ma", "马", 1.3), ("Zhu", "朱", 1.3), ("Hu", "胡", 1.3), ("Guo", "郭", 1.2),
            ("He", "何", 1.2), ("Lin", "林", 1.1), ("Luo", "罗", 0.9), ("Gao", "高", 0.9),
            ("Zheng", "郑", 0.8), ("Liang", "梁", 0.7), ("Xie", "谢", 0.6), ("Song", "宋", 0.5),
            ("Tang", "唐", 0.5), ("Han", "韩", 0.5), ("Zhang", "章", 0.2), ("Zhangsun", "长孙", 0.02)]
GIVEN = [("Wei", "伟"), ("Fang", "芳"), ("Na", "娜"), ("XiuYing", "秀英"), ("Min", "敏"),
         ("Jing", "静"), ("Li", "丽"), ("Qiang", "强"), ("Lei", "磊"), ("Jun", "军"),
         ("Yang", "洋"), ("Yong", "勇"), ("Yan", "艳"), ("Jie", "杰"), ("Juan", "娟"),
         ("Tao", "涛"), ("Ming", "明"), ("Chao", "超"), ("XiuLan", "秀兰"), ("Xia", "霞"),
         ("Ping", "平"), ("Gang", "刚"), ("GuiYing", "桂英"), ("XiaoDong", "小东")]
WESTERN = ["SMITH^JOHN", "MÜLLER^HANS", "GARCIA^MARIA", "DUPONT^MARIE", "ROSSI^MARCO",
           "ZHANG^ANNA", "JOHNSON^EMMA", "NGUYEN^VAN"]
STUDIES = [("Cerebral angiography", ["XA", "XA", "XA"]), ("Coronary angiography", ["XA", "XA"]),
           ("Peripheral angiography", ["XA", "XA", "XA", "XA"]), ("CT head", ["CT", "CT"]),
           ("Embolisation follow-up", ["XA", "SC", "XA"])]
SOP_CLASS = {"XA": XA, "CT": CT, "SC": SC}


@dataclass
class SeriesSpec:
    header: Dataset          # patient, study and series attributes
    instances: int


def _patient_name(rng: random.Random) -> tuple[str, str]:
    """(PatientName, SpecificCharacterSet) in the forms seen from Chinese modalities."""
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(WESTERN), "ISO_IR 100"
    surname = rng.choices(SURNAMES, weights=[s[2] for s in SURNAMES])[0]
    given = rng.choice(GIVEN)
    if roll < 0.30:
        return f"{surname[0].upper()}^{given[0].upper()}", ""                     # pinyin only
    if roll < 0.40:
        return f"{surname[1]}^{given[1]}", "GB18030"                                 # hanzi only
    charset = "GB18030" if roll < 0.75 else "ISO_IR 192"
    return f"{surname[0]}^{given[0]}={surname[1]}^{given[1]}", charset


def generate(total: int, seed: int = 20261122) -> list[SeriesSpec]:
    rng = random.Random(seed)
    specs: list[SeriesSpec] = []
    remaining, patient_no = total, 0
    while remaining > 0:
        patient_no += 1
        name, charset = _patient_name(rng)
        birth = f"{rng.randint(1930, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        for _ in range(rng.choices([1, 2, 3], weights=[60, 30, 10])[0]):
            description, modalities = rng.choice(STUDIES)
            study_uid = generate_uid()
            date = f"{rng.randint(2010, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            accession = f"A{rng.randint(10**7, 10**8 - 1)}"
            time_of_day = f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
            for number, modality in enumerate(modalities, start=1):
                if remaining <= 0:
                    break
                ds = Dataset()
                if charset:
                    ds.SpecificCharacterSet = charset
                ds.PatientName, ds.PatientID = name, f"PID{patient_no:07d}"
                ds.PatientBirthDate, ds.PatientSex = birth, rng.choice("MF")
                ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, date, time_of_day
                ds.AccessionNumber, ds.StudyDescription, ds.StudyID = accession, description, "1"
                ds.ReferringPhysicianName = "LIU^QIANG"
                ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = generate_uid(), number, modality
                ds.SeriesDate, ds.SeriesTime = date, time_of_day
                ds.SeriesDescription = f"{modality} run {number}"
                ds.Manufacturer, ds.InstitutionName = "Siemens", "DSA suite"
                ds.SOPClassUID = SOP_CLASS[modality]
                count = min(remaining, rng.randint(16, 24))
                specs.append(SeriesSpec(ds, count))
                remaining -= count
    return specs


def instance_dataset(spec: SeriesSpec, number: int) -> Dataset:
    ds = Dataset()
    ds.update(spec.header)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = 8
    return ds


# --- filling the index --------------------------------------------------------------

def _defaults(model) -> dict:
    return {f.name: (f.default() if callable(f.default) else f.default)
            for f in model._meta.sorted_fields if f.name != "id"}


def populate(archive: Archive, specs: list[SeriesSpec]) -> int:
    """Bulk-insert the rows the ingest path would write; returns the instance count."""
    patients, studies, series_rows, instances = [], {}, [], []
    patient_ids: dict[str, int] = {}
    now = utcnow()
    defaults = {m: _defaults(m) for m in (Patient, Study, Series, Instance)}
    for spec in specs:
        values = extract(instance_dataset(spec, 1)).values
        key = patient_key(values[Level.PATIENT])
        if key not in patient_ids:
            patient_ids[key] = len(patients) + 1
            patients.append({**defaults[Patient], **values[Level.PATIENT], "patient_key": key,
                             "id": patient_ids[key], "created_at": now})
        study_uid = values[Level.STUDY]["study_instance_uid"]
        study = studies.get(study_uid)
        if study is None:
            study = studies[study_uid] = {**defaults[Study], **values[Level.STUDY], "id": len(studies) + 1,
                                          "patient": patient_ids[key], "created_at": now, "updated_at": now,
                                          "_modalities": set()}
        study["number_of_study_related_series"] += 1
        study["number_of_study_related_instances"] += spec.instances
        study["_modalities"].add(values[Level.SERIES]["modality"])
        series_id = len(series_rows) + 1
        series_rows.append({**defaults[Series], **values[Level.SERIES], "id": series_id,
                            "study": study["id"], "number_of_series_related_instances": spec.instances,
                            "created_at": now, "updated_at": now})
        image = values[Level.IMAGE]
        for number in range(1, spec.instances + 1):
            path = f"bench/{uuid.uuid4().hex}.dcm"
            instances.append({**defaults[Instance], **image, "series": series_id,
                              "sop_instance_uid": generate_uid(), "instance_number": number,
                              "path": path, "size": 1024, "sha256": "0" * 64, "dataset_offset": 300,
                              "transfer_syntax_uid": "1.2.840.10008.1.2.1", "received_at": now,
                              "origin": "bench"})
    for study in studies.values():
        study["modalities_in_study"] = "\\".join(sorted(study.pop("_modalities")))
    with archive.index.write():
        for model, rows in ((Patient, patients), (Study, list(studies.values())),
                            (Series, series_rows), (Instance, instances)):
            for start in range(0, len(rows), 1000):
                model.insert_many(rows[start:start + 1000]).execute()
    return len(instances)


# --- timing ----------------------------------------------------------------------

def find_identifier() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in RETURN_KEYS:
        setattr(ds, keyword, "")
    ds.PatientName = PATTERN
    return ds


def time_pynetdicom(port: int, called_ae: str, runs: int) -> tuple[list[float], int]:
    """Milliseconds from C-FIND request to final status, over one association."""
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_REQUEST_IDENTIFIERS = False
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, evt_handlers=HANDLERS)  # TCP_NODELAY
    if not assoc.is_established:
        raise RuntimeError(f"association with {called_ae} on port {port} failed")
    times, matches = [], 0
    try:
        for run in range(runs + 2):               # two warm-up runs, not counted
            started = time.perf_counter()
            count, final = 0, None
            for status, identifier in assoc.send_c_find(find_identifier(), FIND):
                code = int(status.Status) if "Status" in status else -1
                if code in (0xFF00, 0xFF01):
                    count += 1
                else:
                    final = code
            elapsed = (time.perf_counter() - started) * 1000
            if final != 0:
                raise RuntimeError(f"C-FIND ended with status {final}")
            if run >= 2:
                times.append(elapsed)
            matches = count
    finally:
        assoc.release()
    return times, matches


_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%H:%M:%S.%Q} %m%n
"""
_STAMP = re.compile(r"^(\d+):(\d+):(\d+)\.(\d+)\.(\d+) ")


def _stamp_ms(line: str) -> float:
    h, m, s, ms, us = (int(g) for g in _STAMP.match(line).groups())
    return ((h * 60 + m) * 60 + s) * 1000 + ms + us / 1000


@dataclass
class FindscuRun:
    find_ms: float        # C-FIND-RQ sent to final C-FIND-RSP received, by findscu's own clock
    assoc_ms: float       # A-ASSOCIATE-RQ to A-ASSOCIATE-AC
    total_ms: float       # the whole process, start to exit
    matches: int


def time_findscu(port: int, called_ae: str, runs: int, workdir: Path) -> list[FindscuRun]:
    """dcmtk findscu (C++), one association per run as a workstation does, timed from
    its own log timestamps so that neither process start-up nor a slow Python
    client is counted in the C-FIND time."""
    config = workdir / "findscu-log.cfg"
    config.write_text(_LOG_CONFIG)
    args = ["findscu", "-lc", str(config), "-S", "-aet", CALLING_AE, "-aec", called_ae,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientName={PATTERN}"]
    args += [arg for k in RETURN_KEYS[1:] for arg in ("-k", k)] + ["127.0.0.1", str(port)]
    env = dict(os.environ, TCP_NODELAY="1")
    out = []
    for _ in range(runs + 2):                  # two warm-up runs, not counted
        started = time.perf_counter()
        done = subprocess.run(args, capture_output=True, env=env)
        total = (time.perf_counter() - started) * 1000
        lines = done.stdout.decode(errors="replace").splitlines() + \
            done.stderr.decode(errors="replace").splitlines()
        stamped = [line for line in lines if _STAMP.match(line)]

        def at(text: str) -> float:
            return next(_stamp_ms(line) for line in stamped if text in line)
        try:
            run = FindscuRun(at("Received Final Find Response") - at("Sending Find Request"),
                             at("Association Accepted") - at("Requesting Association"), total,
                             sum(1 for line in stamped if "(Pending)" in line and "Find Response" in line))
        except StopIteration:
            raise RuntimeError(f"findscu failed: {done.stderr.decode(errors='replace')[-800:]}") from None
        if "Received Final Find Response (Success)" not in done.stdout.decode(errors="replace") + \
                done.stderr.decode(errors="replace"):
            raise RuntimeError("findscu: the query did not end with Success")
        out.append(run)
    return out[2:]


@dataclass
class Result:
    target: str
    instances: int
    load_s: float
    findscu: list[FindscuRun]
    scu_ms: list[float]          # pynetdicom SCU over one open association
    plan: list[str]

    @property
    def matches(self) -> int:
        return self.findscu[0].matches if self.findscu else 0

    @property
    def find_ms(self) -> list[float]:
        return [r.find_ms for r in self.findscu]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))] if ordered else float("nan")


# --- our archive ------------------------------------------------------------------

def bench_archive(label: str, database_url: str, specs: list[SeriesSpec], workdir: Path,
                  runs: int) -> Result:
    from tests.peers import ServerProcess

    data_dir = workdir / f"data-{label}"
    settings = Settings.load(data_dir=data_dir, env={}, overrides={
        "database_url": database_url, "min_free_mb": 0, "log_level": "WARNING"})
    archive = Archive(settings)
    archive.open(upgrade=True)
    started = time.perf_counter()
    count = populate(archive, specs)
    load_s = time.perf_counter() - started
    PeerRegistry(archive.index).add(Peer("bench", CALLING_AE, "127.0.0.1", 104))
    query = Query(Level.STUDY, {"PatientName": PATTERN}, RETURN_KEYS)
    plan = Search(archive.index).explain(query)
    archive.close()

    server = ServerProcess(data_dir, {"database_url": database_url, "log_level": "WARNING"})
    server.start()
    try:
        findscu = time_findscu(server.port, server.ae_title, runs, workdir)
        scu_ms, _ = time_pynetdicom(server.port, server.ae_title, max(5, runs // 3))
    finally:
        server.stop()
    return Result(f"DSM PACS, {label}", count, load_s, findscu, scu_ms, plan)


def mariadb_url() -> tuple[str, callable] | None:
    from tests.peers import MARIADB, mariadb_connection

    try:
        conn = mariadb_connection()
    except Exception as exc:
        print(f"MariaDB unreachable, skipped: {exc}", file=sys.stderr)
        return None
    name = f"dsmpacs_bench_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")

    def drop() -> None:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()

    return f"mysql://{MARIADB['user']}@{MARIADB['host']}:{MARIADB['port']}/{name}", drop


# --- Orthanc ----------------------------------------------------------------------

def bench_orthanc(specs: list[SeriesSpec], limit: int, workdir: Path, runs: int) -> Result | None:
    from tests import factories
    from tests.orthanc import Orthanc, orthanc_available

    if not orthanc_available() or not shutil.which("storescu"):
        print("Orthanc or storescu not installed, skipped", file=sys.stderr)
        return None
    files = workdir / "orthanc-corpus"
    written = 0
    for spec in specs:
        for number in range(1, spec.instances + 1):
            if written >= limit:
                break
            ds = instance_dataset(spec, number)
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 7, 0
            ds.PixelData = bytes(64)
            factories.write(ds, files / f"{written:06d}.dcm")
            written += 1
    orthanc = Orthanc(workdir / "orthanc", modalities={"bench": (CALLING_AE, "127.0.0.1", 104)})
    orthanc.start()
    try:
        started = time.perf_counter()
        done = subprocess.run(["storescu", "-aec", orthanc.ae_title, "+sd", "+r", "127.0.0.1",
                               str(orthanc.dicom_port), str(files)],
                              capture_output=True, env=dict(os.environ, TCP_NODELAY="1"))
        load_s = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"storescu to Orthanc failed: {done.stderr.decode(errors='replace')[-500:]}")
        stored = orthanc.get("/statistics")["CountInstances"]
        findscu = time_findscu(orthanc.dicom_port, orthanc.ae_title, runs, workdir)
        scu_ms, _ = time_pynetdicom(orthanc.dicom_port, orthanc.ae_title, max(5, runs // 3))
    finally:
        orthanc.stop()
    return Result("Orthanc 1.10 (SQLite)", stored, load_s, findscu, scu_ms, [])


# --- report -----------------------------------------------------------------------

def report(results: list[Result]) -> None:
    print()
    print(f"C-FIND, Study Root, STUDY level, PatientName={PATTERN}, {len(RETURN_KEYS)} return keys")
    header = ["target", "instances", "load s", "matches", "C-FIND median ms", "p90 ms", "ms/match",
              "association ms", "findscu run ms", "pynetdicom SCU ms"]
    rows = [[r.target, f"{r.instances:,}", f"{r.load_s:.1f}", str(r.matches), f"{median(r.find_ms):.1f}",
             f"{p90(r.find_ms):.1f}", f"{median(r.find_ms) / max(r.matches, 1):.2f}",
             f"{median([x.assoc_ms for x in r.findscu]):.1f}",
             f"{median([x.total_ms for x in r.findscu]):.1f}", f"{median(r.scu_ms):.1f}"]
            for r in results]
    sizes = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(s) for h, s in zip(header, sizes)))
    print("  ".join("-" * s for s in sizes))
    for row in rows:
        print("  ".join(v.ljust(s) for v, s in zip(row, sizes)))
    print(f"C-FIND median/p90: dcmtk findscu, a new association per run, {len(results[0].findscu) if results else 0} "
          "runs after two warm-ups, from sending the C-FIND-RQ to the final response, by findscu's "
          "log clock.\nfindscu run: the whole process (start-up ~20 ms, association, query, release). "
          "pynetdicom SCU: the same query over one open association, dominated by pynetdicom's own "
          "per-response cost.\nload: bulk INSERT of the index rows for DSM PACS; C-STORE with "
          "storescu for Orthanc.")
    for r in results:
        if r.plan:
            print(f"\nquery plan, {r.target}:")
            for line in r.plan:
                print(f"  {line}")
    print()
    for r in results:
        if r.target.startswith("DSM PACS"):
            verdict = "meets" if median(r.find_ms) < 50 else "MISSES"
            print(f"{r.target}: C-FIND median {median(r.find_ms):.1f} ms {verdict} the 50 ms target")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--orthanc-instances", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--skip", action="append", default=[], choices=["sqlite", "mariadb", "orthanc"])
    args = parser.parse_args(argv)

    (ROOT / "bench" / ".work").mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="find-", dir=ROOT / "bench" / ".work"))
    try:
        started = time.perf_counter()
        specs = generate(args.instances)
        print(f"generated {sum(s.instances for s in specs):,} instances in {len(specs):,} series "
              f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
        results = []
        if "sqlite" not in args.skip:
            results.append(bench_archive("SQLite", f"sqlite:///{workdir / 'index.sqlite3'}", specs,
                                         workdir, args.runs))
        if "mariadb" not in args.skip:
            found = mariadb_url()
            if found:
                url, drop = found
                try:
                    results.append(bench_archive("MariaDB", url, specs, workdir, args.runs))
                finally:
                    drop()
        if "orthanc" not in args.skip:
            result = bench_orthanc(specs, args.orthanc_instances, workdir, args.runs)
            if result:
                results.append(result)
        report(results)
        print(f"\nbench/find.py took {time.perf_counter() - started:.0f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
