"""Orders from a RIS or HIS over HL7 v2 (ORM^O01 over MLLP), against a real
`dsmpacs serve` with hl7_port set: python-hl7's `mllp_send` command as the
sender over a real socket, new (NW), change (XO) and cancel (CA) orders with
Chinese names in UTF-8 and in GB 18030 (the latter with delimiter bytes inside
its characters), junk, an unsupported message, a content error (AE with ERR), a
sender not allowed, an oversized message and a host not allowed; then dcmtk
`findscu -W` as the modality sees the orders in the worklist. The listener:
package/dsmpacs/hl7v2/; docs/workflow.md."""
from __future__ import annotations

import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from hl7.client import MLLPClient

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.institutions import Institutions
from dsmpacs.archive.orders import Orders, State
from dsmpacs.archive.peers import Peer, PeerRegistry
from dsmpacs.archive.visibility import Scope
from tests.findscu import findscu
from tests.peers import free_port
from tests.test_worklist import MWL_KEYS
from tests.webclient import server_archive

SB, EB = b"\x0b", b"\x1c\x0d"
MLLP_SEND = str(Path(sys.executable).with_name("mllp_send"))


def orm(control: str, msg_id: str, *, patient_id: str, name: str, accession: str, when: str = "202612070830",
        procedure: str = "CTHEAD^CT head", modality: str = "CT", charset: str = "UNICODE UTF-8",
        sender: str = "HIS|HOSPA", pid3: str | None = None, encoding: str = "utf-8") -> bytes:
    def segment(name: str, values: dict[int, str]) -> str:
        return "|".join([name] + [values.get(i, "") for i in range(1, max(values) + 1)])
    segments = [
        "MSH|^~\\&|" + segment("", {1: sender, 2: "DSMPACS", 3: "RADIOLOGY", 4: "20261206120000",
                                      6: "ORM^O01", 7: msg_id, 8: "P", 9: "2.5", 15: charset})[1:],
        segment("PID", {1: "1", 3: f"{patient_id if pid3 is None else pid3}^^^HOSPA^MR", 5: name,
                        7: "19700102", 8: "F"}),
        "PV1|1|O",
        segment("ORC", {1: control, 2: f"P{accession}", 3: accession, 5: "SC", 7: f"^^^{when}^^R"}),
        segment("OBR", {1: "1", 2: f"P{accession}", 3: accession, 4: procedure, 16: "^Li^Hua^^^Dr",
                        18: accession, 24: modality, 36: when}),
    ]
    return SB + "\r".join(segments).encode(encoding) + b"\r" + EB


def two_orders() -> bytes:
    """One ORM^O01 with two ORC/OBR pairs; the patient's name in Latin letters and in Chinese."""
    first = orm("NW", "M12", patient_id="HL7-10", name="WANG^XIAOMING~王^小明", accession="HL7ACC10",
                when="202612071100")
    second = orm("NW", "M12", patient_id="HL7-10", name="x", accession="HL7ACC11", modality="")
    orders = b"\r".join(s for s in second[1:-2].split(b"\r") if s[:3] in (b"ORC", b"OBR"))
    return first[:-2] + orders + b"\r" + EB


def send(port: int, messages: list[bytes], tmp_path: Path, name: str) -> list[tuple[str, str, bytes]]:
    """mllp_send with a file of framed messages; (MSA-1, MSA-2, the whole ACK) per answer."""
    source = tmp_path / f"{name}.hl7"
    source.write_bytes(b"".join(messages))
    done = subprocess.run([MLLP_SEND, "--port", str(port), "--file", str(source), "127.0.0.1"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    acks = [a for a in done.stdout.split(EB) if b"MSA" in a]
    out = []
    for answer in acks:
        msa = re.search(rb"\rMSA\|(\w\w)\|([^|\r]*)", answer)
        assert msa, answer
        out.append((msa.group(1).decode(), msa.group(2).decode(), answer))
    return out


def test_orm_over_mllp_feeds_the_worklist(server_factory, tmp_path):
    port = free_port()
    server = server_factory(hl7_port=port, hl7_allowed_senders="HIS^HOSPA,HIS^HOSPB", hl7_max_kb=4,
                            hl7_allowed_hosts="127.0.0.1", hl7_timeout=1)
    with server_archive(server) as archive:
        institutions = Institutions(archive.index)
        hosp_a = institutions.create("hosp-a", "Hospital A").id
        institutions.add_alias("HOSPA", "hosp-a")
        # the modality, bound to hospital A: its worklist holds A's orders only
        PeerRegistry(archive.index).add(Peer(name="ct", ae_title="MODALITY", host="127.0.0.1", port=104))
        institutions.bind_ae("ct", "hosp-a")

    gb_name = "區^妡怡"          # in GB 18030 these hold the bytes of '^' and '|'
    assert b"|" in gb_name.encode("gb18030") and gb_name.encode("gb18030").count(b"^") > 1
    answers = send(port, [
        orm("NW", "M1", patient_id="HL7-1", name="王^小明", accession="HL7ACC1"),
        orm("NW", "M2", patient_id="HL7-2", name=gb_name, accession="HL7ACC2", charset="GB 18030-2000",
            encoding="gb18030", when="202612071000", modality="MR", procedure="MRBRAIN^头颅磁共振"),
        orm("NW", "M3", patient_id="HL7-3", name="Zhao^Liu", accession="HL7ACC3"),
        orm("XO", "M4", patient_id="HL7-1", name="王^小明", accession="HL7ACC1", when="202612071430",
            procedure="CTHEADC^CT head with contrast"),
        orm("CA", "M5", patient_id="HL7-3", name="Zhao^Liu", accession="HL7ACC3"),
        SB + b"this is not HL7 at all" + EB,
        SB + b"MSH|^~\\&|HIS|HOSPA|||20261206||ADT^A01|M6|P|2.5\rPID|1||X" + EB,
        orm("NW", "M7", patient_id="", pid3="", name="Nobody^Here", accession="HL7ACC7"),
        orm("XO", "M8", patient_id="HL7-9", name="A^B", accession="NOSUCH"),
        orm("NW", "M9", patient_id="HL7-1", name="王^小明", accession="HL7ACC1"),       # resent: AA
        orm("NW", "M10", patient_id="HL7-4", name="Sun^Qi", accession="HL7ACC4", sender="EVIL|CORP"),
        # hospital B (no alias: the default institution) cannot cancel hospital A's order
        orm("CA", "M11", patient_id="HL7-2", name=gb_name, accession="HL7ACC2", sender="HIS|HOSPB"),
        # two orders in one message, the second without a modality: the first is applied
        two_orders(),
    ], tmp_path, "batch")
    codes = [(code, control) for code, control, _ in answers]
    assert codes == [("AA", "M1"), ("AA", "M2"), ("AA", "M3"), ("AA", "M4"), ("AA", "M5"), ("AR", ""),
                     ("AR", "M6"), ("AE", "M7"), ("AE", "M8"), ("AA", "M9"), ("AR", "M10"), ("AE", "M11"),
                     ("AE", "M12")], answers
    assert answers[12][2].count(b"\rERR|") == 1 and b"|OBR^1^24^1|101^" in answers[12][2]
    # the GB 18030 message is answered in its character set, ACK^O01 per v2.5
    gb_ack = answers[1][2]
    assert b"|ACK^O01^ACK|" in gb_ack and gb_ack.endswith(b"GB 18030-2000\rMSA|AA|M2|HL7ACC2 registered\r")
    # AE names the missing field in ERR (v2.5 ERR-2, ERR-3) and the unknown order
    assert b"\rERR|PID^1^3^101&Required field missing&HL70357|PID^1^3^1^1|101^Required field missing^HL70357|E|" \
        in answers[7][2]
    assert b"|204^Unknown key identifier^HL70357|" in answers[8][2]
    assert b"|200^Unsupported message type^HL70357|" in answers[6][2]

    # Oversized (over hl7_max_kb = 4 KiB): AR, the connection closed; the next one is served
    big = orm("NW", "BIG1", patient_id="HL7-5", name="Big^" + "X" * 6000, accession="HL7ACC5")
    with MLLPClient("127.0.0.1", port) as client:
        reply = client.send(big)
        assert re.search(rb"MSA\|AR\|BIG1\|message too large", reply), reply
        client.socket.settimeout(10)
        try:                                               # closed by the archive: FIN, or a reset
            assert client.socket.recv(100) == b""          # when the tail of the message went unread
        except ConnectionResetError:
            pass
    assert [c for c, *_ in send(port, [orm("NW", "M11", patient_id="HL7-6", name="Qian^Ba",
                                           accession="HL7ACC6")], tmp_path, "after")] == ["AA"]
    # A sender trickling a message byte by byte is cut off hl7_timeout (1 s) after its first byte
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        started = time.monotonic()
        closed = False
        for byte in orm("NW", "SLOW", patient_id="HL7-8", name="Slow^Sender", accession="HL7ACC8"):
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if select.select([slow], [], [], 0.2)[0]:
                # The archive closes with our last bytes unread, so the kernel may answer with a
                # reset instead of a FIN; either way the connection is gone.
                try:
                    closed = slow.recv(100) == b""
                except ConnectionResetError:
                    closed = True
                break
        elapsed = time.monotonic() - started
    assert closed and 0.9 < elapsed < 5, (closed, elapsed)
    # A host not in hl7_allowed_hosts: closed unanswered (127.0.0.2 is this machine too)
    with socket.socket() as other:
        other.bind(("127.0.0.2", 0))
        other.settimeout(10)
        other.connect(("127.0.0.1", port))
        try:
            other.sendall(orm("NW", "M12", patient_id="HL7-7", name="Wu^Jiu", accession="HL7ACC7"))
            assert other.recv(100) == b""
        except ConnectionResetError:
            pass

    with server_archive(server) as archive:
        orders = Orders(archive.index)
        mine = {o.accession_number: o for o in orders.list(scope=Scope(frozenset({hosp_a})))}
        assert [orders.by_accession(a) for a in ("HL7ACC4", "HL7ACC7", "HL7ACC8", "HL7ACC11")] == [None] * 4
        trail = AuditTrail(archive.index).recent(limit=100)
    assert set(mine) == {"HL7ACC1", "HL7ACC2", "HL7ACC3", "HL7ACC6", "HL7ACC10"}      # MSH-4 HOSPA's alias
    assert mine["HL7ACC10"].patient_name == "WANG^XIAOMING=王^小明" and mine["HL7ACC2"].state is State.SCHEDULED
    changed, gb, cancelled = mine["HL7ACC1"], mine["HL7ACC2"], mine["HL7ACC3"]
    assert (changed.scheduled_time, changed.procedure_code, changed.procedure_description) == (
        "143000", "CTHEADC", "CT head with contrast")
    assert (gb.patient_name, gb.procedure_description, gb.modality, gb.sex) == (gb_name, "头颅磁共振", "MR", "F")
    assert gb.requesting_physician == "Li^Hua^^Dr" and gb.birth_date == "19700102"
    assert cancelled.state is State.DISCONTINUED
    actions = {(e.action, e.actor) for e in trail}
    assert {("order-create", "hl7:HIS^HOSPA"), ("order-change", "hl7:HIS^HOSPA"),
            ("order-state", "hl7:HIS^HOSPA"), ("access-denied", "hl7:EVIL^CORP"),
            ("assoc-rejected", "hl7:127.0.0.2")} <= actions, actions

    # The modality's worklist: the changed order, the GB 18030 name intact, no cancelled one
    day = findscu(server.port, [*MWL_KEYS, "(0040,0100)[0].ScheduledProcedureStepStartDate=20261207"],
                  tmp_path / "day", model="-W", calling_ae="MODALITY")
    assert day.final == "Success"
    assert day.values("AccessionNumber") == ["HL7ACC6", "HL7ACC2", "HL7ACC10", "HL7ACC1"]       # by time
    assert str(day.responses[2].PatientName) == "WANG^XIAOMING=王^小明"
    by_name = findscu(server.port, [*MWL_KEYS, "(0008,0005)=ISO_IR 192", "PatientName=區*".encode("utf-8")],
                      tmp_path / "name", model="-W", calling_ae="MODALITY")
    assert by_name.values("AccessionNumber") == ["HL7ACC2"]
    answer = by_name.responses[0]
    assert str(answer.PatientName) == gb_name and answer.RequestedProcedureDescription == "头颅磁共振"
    step = day.responses[3].ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledProcedureStepStartTime) == ("CT", "143000")
    log = server.log()
    assert "not an MLLP block" in log or "not an HL7 message" in log
    assert "larger than hl7_max_kb" in log and "not in hl7_allowed_hosts" in log
    assert "not whole within 1 s" in log


def test_hl7_settings_are_checked_and_gb18030_is_decoded_before_it_is_split():
    import pytest

    from dsmpacs.hl7v2 import charset
    from dsmpacs.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="hl7_allowed_hosts"):
        Settings(hl7_allowed_hosts="10.0.0.0/8, the-his")
    with pytest.raises(SettingsError, match="APPLICATION\\^FACILITY"):
        Settings(hl7_allowed_senders="HIS")
    assert Settings(hl7_allowed_senders="his^*, RIS^Hosp A").hl7_senders == {("HIS", "*"), ("RIS", "HOSP A")}
    assert Settings().hl7_port == 0                            # off unless asked for
    raw = "MSH|^~\\&|HIS|HOSPA|||||ORM^O01|1|P|2.5||||||GB 18030-2000\rPID|1||X||區^妡怡".encode("gb18030")
    text, name = charset.decode(raw)
    assert name == "GB 18030-2000" and text.endswith("||區^妡怡")
    facility = "MSH|^~\\&|HIS|億康醫院|||||ORM^O01|1|P|2.5||||||GB 18030-2000\rPID|1||X||王".encode("gb18030")
    assert b"|" in "億".encode("gb18030") and charset.decode(facility)[1] == "GB 18030-2000"
    with pytest.raises(charset.CharsetProblem):
        charset.decode(b"MSH|^~\\&|HIS|HOSPA|||||ORM^O01|1|P|2.5||||||ISO IR6 FOO\rPID")
    with pytest.raises(charset.CharsetProblem):
        charset.decode("MSH|^~\\&|A|B|||||ORM^O01|1|P|2.5\rPID|1||X||王".encode("gb18030"))   # not UTF-8
