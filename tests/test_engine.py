"""The DICOM engine (dsmpacs.dicom.engine): its version pin, its single install
point, and the transfer-syntax negotiation it changes, against real sockets."""
from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from dsmpacs.dicom import engine
from dsmpacs.dicom.engine.negotiation import choose
from tests import factories as f
from tests.retrieval import register

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "package" / "dsmpacs"
UNKNOWN_SYNTAX = "1.2.3.4.5.6.7.8"


def test_engine_is_pinned_to_the_installed_and_constrained_pynetdicom():
    assert pynetdicom.__version__ == engine.WRITTEN_FOR
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "constraints.txt").read_text(), re.M))
    assert pins["pynetdicom"] == engine.WRITTEN_FOR


def test_another_pynetdicom_version_is_refused_with_a_clear_message():
    with pytest.raises(engine.EngineVersionError, match=r"written against pynetdicom 3\.0\.4.*3\.1\.0"):
        engine.check_version("3.1.0")


def test_pynetdicom_is_changed_only_inside_the_engine_and_installed_from_one_place():
    outside = [p for p in PACKAGE.rglob("*.py") if "engine" not in p.relative_to(PACKAGE).parts]
    config_writes = [str(p) for p in outside if re.search(r"_config\.\w+\s*=", p.read_text())]
    assert config_writes == []
    callers = [str(p.relative_to(PACKAGE)) for p in outside
               if re.search(r"\bengine\.install\(\)", p.read_text())]
    assert callers == ["app.py"]
    entry = (PACKAGE / "cli" / "__init__.py").read_text()
    assert "install_engine()" in entry


# --- negotiation -------------------------------------------------------------

@pytest.mark.parametrize("proposed, expected", [
    ([ImplicitVRLittleEndian, ExplicitVRLittleEndian], ExplicitVRLittleEndian),
    (["1.2.840.10008.1.2.4.70", ImplicitVRLittleEndian, ExplicitVRLittleEndian], "1.2.840.10008.1.2.4.70"),
    ([UNKNOWN_SYNTAX, ImplicitVRLittleEndian], ImplicitVRLittleEndian),
    ([UNKNOWN_SYNTAX], None),
])
def test_choice_among_proposed_syntaxes(proposed, expected):
    assert choose([str(p) for p in proposed], None, frozenset()) == expected


def _associate(server, *syntaxes: str):
    ae = AE(ae_title="NEGOTIATOR")
    ae.add_requested_context(CTImageStorage, list(syntaxes))
    # Verification keeps the association up when the CT context is rejected
    # (pynetdicom aborts an association with no accepted context).
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)


def test_a_context_of_unknown_transfer_syntaxes_is_rejected_with_result_4(server):
    assoc = _associate(server, UNKNOWN_SYNTAX)
    try:
        assert assoc.is_established
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [Verification]
        assert [(str(cx.abstract_syntax), cx.result) for cx in assoc.rejected_contexts] == [
            (CTImageStorage, 0x04)]
    finally:
        assoc.release()


def test_a_listed_private_transfer_syntax_is_accepted(server_factory, database_url):
    server = server_factory(database_url=database_url, dicom_extra_transfer_syntaxes=UNKNOWN_SYNTAX)
    assoc = _associate(server, UNKNOWN_SYNTAX)
    try:
        accepted = {str(cx.abstract_syntax): str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        assert accepted[CTImageStorage] == UNKNOWN_SYNTAX
    finally:
        assoc.release()


def test_explicit_vr_is_chosen_when_implicit_is_proposed_first(server):
    assoc = _associate(server, ImplicitVRLittleEndian, ExplicitVRLittleEndian)
    try:
        accepted = {str(cx.abstract_syntax): str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        assert accepted[CTImageStorage] == ExplicitVRLittleEndian
    finally:
        assoc.release()


def test_pynetdicom_getscu_receives_an_explicit_vr_run_unchanged(server, tmp_path):
    """pynetdicom's getscu proposes Implicit VR first for every storage class; the run
    stored as Explicit VR must come back in Explicit VR, not re-encoded."""
    study_uid = "1.2.826.0.1.3680043.8.498.7701"
    xa = f.write(f.xa_run(frames=3, size=64, study_uid=study_uid), tmp_path / "xa.dcm",
                 transfer_syntax=ExplicitVRLittleEndian)
    assert server.storescu(xa).returncode == 0
    register(server, "getter", "GETSCU", 104, may_retrieve=True)
    out = tmp_path / "got"
    out.mkdir()
    done = subprocess.run([sys.executable, "-m", "pynetdicom", "getscu", "-aet", "GETSCU",
                           "-aec", server.ae_title, "-k", "QueryRetrieveLevel=STUDY",
                           "-k", f"StudyInstanceUID={study_uid}", "-od", str(out),
                           "127.0.0.1", str(server.port)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    received = list(out.iterdir())
    assert len(received) == 1, done.stdout + done.stderr
    got = dcmread(received[0])
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert f.dataset_bytes(received[0]) == f.dataset_bytes(xa)


def test_a_received_c_store_request_becomes_the_primitive_pynetdicom_would_make():
    """engine/store_service.py converts a C-STORE-RQ's six parameters directly; the
    primitive must hold what pynetdicom's own conversion gives, move originator included,
    and a non-conformant multi-valued parameter still takes pynetdicom's path."""
    from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
    from pynetdicom.dimse_primitives import C_STORE

    from dsmpacs.dicom.engine.store_service import store_request_primitive

    request = C_STORE()
    request.MessageID, request.Priority = 7, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = CTImageStorage, "1.2.3.4.5"
    request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID = "MOVER", 3
    request.DataSet = None
    sent = C_STORE_RQ()
    sent.primitive_to_message(request)
    # Received as from the wire: the command set decoded from its bytes (engine/command.py).
    message = DIMSEMessage()
    for pdata in sent.encode_msg(5, 16384):
        message.decode_msg(pdata)
    assert isinstance(message, C_STORE_RQ)
    ours, theirs = store_request_primitive(message), engine_original_primitive(message)
    for name in ("MessageID", "Priority", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID", "DataSet",
                 "_context_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.AffectedSOPInstanceUID == "1.2.3.4.5" and ours.MoveOriginatorApplicationEntityTitle == "MOVER"
    message.command_set.MoveOriginatorMessageID = [3, 4]
    assert store_request_primitive(message) is None
    assert isinstance(DIMSEMessage.message_to_primitive(message), C_STORE)


# --- received command sets (engine/command.py) ----------------------------------------

def _command_sets() -> dict[str, bytes]:
    """Command sets as peers send them, encoded by pynetdicom's own DIMSE messages."""
    from io import BytesIO

    from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, C_STORE_RQ, C_STORE_RSP
    from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE

    def encoded(message_class, primitive) -> bytes:
        message = message_class()
        message.primitive_to_message(primitive)
        return b"".join(bytes(pdata.presentation_data_value_list[0][1][1:])
                        for pdata in message.encode_msg(1, 0)
                        if pdata.presentation_data_value_list[0][1][0] & 1)

    store = C_STORE()
    store.MessageID, store.Priority = 7, 2
    store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = CTImageStorage, "1.2.3.4.5"
    moved = C_STORE()
    moved.MessageID, moved.Priority = 8, 0
    moved.AffectedSOPClassUID, moved.AffectedSOPInstanceUID = CTImageStorage, "1.2.3.4.6"
    moved.MoveOriginatorApplicationEntityTitle, moved.MoveOriginatorMessageID = "MOVER", 3
    answer = C_STORE()
    answer.MessageIDBeingRespondedTo, answer.Status = 7, 0xB000
    answer.AffectedSOPClassUID, answer.AffectedSOPInstanceUID = CTImageStorage, "1.2.3.4.5"
    answer.ErrorComment = "stored with warnings"
    echo = C_ECHO()
    echo.MessageID, echo.AffectedSOPClassUID = 1, Verification
    find = C_FIND()
    find.MessageID, find.Priority = 9, 0
    find.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    find.Identifier = BytesIO(b"\x10\x00\x10\x00\x00\x00\x00\x00")
    return {"C-STORE-RQ": encoded(C_STORE_RQ, store), "C-STORE-RQ of a C-MOVE": encoded(C_STORE_RQ, moved),
            "C-STORE-RSP": encoded(C_STORE_RSP, answer), "C-ECHO-RQ": encoded(C_ECHO_RQ, echo),
            "C-FIND-RQ": encoded(C_FIND_RQ, find)}


@pytest.mark.parametrize("kind", ["C-STORE-RQ", "C-STORE-RQ of a C-MOVE", "C-STORE-RSP", "C-ECHO-RQ",
                                  "C-FIND-RQ"])
def test_a_command_set_decodes_to_what_pydicom_reads_with_its_numbers_and_uids_converted(kind):
    """Every element holds the value pydicom's reader and conversion give it, of the same
    type, at the same offset; the single US, UL and UI elements are converted already."""
    from io import BytesIO

    from pydicom.dataelem import DataElement
    from pynetdicom import dimse_messages
    from pynetdicom.dsutils import decode as pydicom_decode

    from dsmpacs.dicom.engine import command

    data = _command_sets()[kind]
    assert dimse_messages.decode is command.decode         # installed by the composition root
    ours, theirs = command.decode(BytesIO(data), True, True), pydicom_decode(BytesIO(data), True, True)
    assert list(ours.keys()) == list(theirs.keys()) and len(ours) >= 4
    assert ours.original_encoding == theirs.original_encoding
    assert ours.original_character_set == theirs.original_character_set
    converted = 0
    for tag in theirs.keys():
        raw = ours._dict[tag]
        if isinstance(raw, DataElement):
            converted += 1
            assert raw.VR in ("US", "UL", "UI")
        mine, pydicoms = ours[tag], theirs[tag]
        assert (mine.VR, mine.value, type(mine.value), mine.file_tell) == (
            pydicoms.VR, pydicoms.value, type(pydicoms.value), pydicoms.file_tell), tag
    assert converted >= 3
    assert ours.CommandField == theirs.CommandField


def test_anything_but_a_plain_command_set_is_left_to_pynetdicom_s_decode():
    """Another group, a length past the end, an undefined length, a tag pydicom does not
    know, a truncated header: command_set declines, and decode gives pydicom's answer."""
    from io import BytesIO

    from pynetdicom.dsutils import decode as pydicom_decode

    from dsmpacs.dicom.engine import command

    good = _command_sets()["C-STORE-RQ"]
    assert command.command_set(good) is not None
    bad = {
        # (0008,0100) Code Value: its element number is Command Field's.
        "another group": good + struct.pack("<HHL", 0x0008, 0x0100, 2) + b"AB",
        "length past the end": good + struct.pack("<HHL", 0x0000, 0x0700, 40) + b"\x00\x00",
        "undefined length": good + struct.pack("<HHL", 0x0000, 0x0700, 0xFFFFFFFF),
        "unknown tag": good + struct.pack("<HHL", 0x0000, 0x7777, 2) + b"\x00\x00",
        "truncated header": good + b"\x00\x00\x00",
    }
    for name, data in bad.items():
        assert command.command_set(data) is None, name
    # A multi-valued number stays raw, converted by pydicom when read.
    doubled = good + struct.pack("<HHL", 0x0000, 0x1031, 4) + b"\x01\x00\x02\x00"
    assert list(command.decode(BytesIO(doubled), True, True).MoveOriginatorMessageID) == [1, 2]
    # A data set's encoding is pydicom's to read.
    explicit = command.decode(BytesIO(b"\x10\x00\x10\x00PN\x04\x00Doe^"), False, True)
    assert explicit.PatientName == "Doe^"
    ours = command.decode(BytesIO(bad["another group"]), True, True)
    theirs = pydicom_decode(BytesIO(bad["another group"]), True, True)
    assert ours.keys() == theirs.keys() and ours.CodeValue == theirs.CodeValue == "AB"


# --- a received P-DATA-TF (engine/pdata.py) ------------------------------------------

def _p_data_tf(items: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack(">LB", len(value) + 1, context_id) + value for context_id, value in items)
    return struct.pack(">BBL", 0x04, 0, len(body)) + body


def test_a_p_data_tf_is_read_as_pynetdicom_reads_it_into_views_of_one_copy():
    """The PDV list gives what pynetdicom's own decode gives, each value a view of the
    one bytes object (no copy per item); every malformed list pynetdicom refuses is
    refused too (its _read_pdu_data then answers Evt19: A-ABORT)."""
    from pynetdicom.pdu import P_DATA_TF

    from dsmpacs.dicom.engine.pdata import pdv_items

    values = [(1, b"\x03" + b"C" * 40), (3, b"\x00" + bytes(range(256)) * 300), (3, b"\x02end")]
    pdu = _p_data_tf(values)
    theirs = P_DATA_TF()
    theirs.decode(pdu)
    body = pdu[6:]
    ours = pdv_items(body)
    assert [(i.presentation_context_id, bytes(i.presentation_data_value)) for i in ours] == values
    assert [(i.presentation_context_id, i.presentation_data_value)
            for i in theirs.presentation_data_value_items] == values
    assert all(i.presentation_data_value.obj is body for i in ours)
    length = struct.unpack(">L", pdu[6:10])[0]
    malformed = {
        "item longer than the PDU": pdu[:6] + struct.pack(">L", length + 8) + pdu[10:],
        "item of length 0": struct.pack(">BBL", 4, 0, 5) + struct.pack(">LB", 0, 1),
        "item header cut short": struct.pack(">BBL", 4, 0, 3) + b"\x00\x00\x01",
    }
    for bad in malformed.values():
        with pytest.raises(Exception):      # noqa: B017 - AssertionError or struct.error
            P_DATA_TF().decode(bad)
        with pytest.raises(ValueError):
            pdv_items(bad[6:])


def test_raw_pdu_handlers_still_get_their_bytes_and_pdus(server):
    """With a handler on EVT_DATA_RECV the P-DATA-TF takes pynetdicom's own decode (the
    handler gets the raw bytes); without one it is read into views, and a handler on
    EVT_PDU_RECV gets the PDU either way. Our C-ECHO-RSP arrives over a real socket."""
    def echo(handlers) -> int:
        ae = AE(ae_title="PDUWATCH")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title, evt_handlers=handlers)
        try:
            assert assoc.is_established
            return assoc.send_c_echo().Status
        finally:
            assoc.release()

    raw, pdus = [], []
    both = [(evt.EVT_DATA_RECV, lambda event: raw.append(event.data)),
            (evt.EVT_PDU_RECV, lambda event: pdus.append(event.pdu))]
    assert echo(both) == 0x0000
    data_tf = [d for d in raw if d[:1] == b"\x04"]
    assert data_tf and isinstance(data_tf[0], bytes)
    values = [i.presentation_data_value for p in pdus if p.pdu_type == 0x04 for i in p.presentation_data_value_items]
    assert values and all(isinstance(v, bytes) for v in values), "pynetdicom's decode when raw bytes are wanted"

    pdus.clear()
    assert echo([(evt.EVT_PDU_RECV, lambda event: pdus.append(event.pdu))]) == 0x0000
    values = [i.presentation_data_value for p in pdus if p.pdu_type == 0x04 for i in p.presentation_data_value_items]
    assert values and all(isinstance(v, memoryview) for v in values), "views when nobody wants raw bytes"


def _dataset_bytes(part10: bytes) -> bytes:
    """What follows a Part 10 file's File Meta group (its length is at byte 140)."""
    return part10[144 + struct.unpack_from("<I", part10, 140)[0]:]


def test_a_received_store_s_pdus_are_views_of_one_buffer_each_and_every_byte_arrives(tmp_path):
    """Over a real association into the engine: each P-DATA-TF's values are read-only
    views of the one ReceivedBuffer its body was read into (engine/pdata.py), an
    EVT_PDU_RECV handler gets each PDU and the state machine a DT-2 for each, and each
    stored dataset is the one sent, byte for byte (a 32-frame run over many 16 KB PDUs,
    and a small one in one)."""
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.sop_class import SecondaryCaptureImageStorage, XRayAngiographicImageStorage

    from dsmpacs.archive.storage import ReceivedBuffer, Storage
    from dsmpacs.dicom.engine import spool as engine_spool
    from dsmpacs.dicom.engine.store_service import fast_store_handler

    storage = Storage(tmp_path / "storage")
    storage.prepare()
    received, pdus, transitions = [], [], []

    @fast_store_handler
    def handle(call):
        received.append(call.request._dataset_file.staged().path.read_bytes())
        return 0x0000

    handlers = [(evt.EVT_C_STORE, handle),
                (evt.EVT_PDU_RECV, lambda event: pdus.append(event.pdu)),
                (evt.EVT_FSM_TRANSITION, lambda event: transitions.append((event.action, event.fsm_event)))]
    ae = AE(ae_title="PDATA")
    ae.maximum_pdu_size = 16384
    ae.add_supported_context(XRayAngiographicImageStorage)
    ae.add_supported_context(SecondaryCaptureImageStorage)
    engine_spool.bind_storage(ae, storage)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    sent = [f.write(f.xa_run(frames=32, size=64), tmp_path / "run.dcm"),
            f.write(f.secondary_capture(size=16), tmp_path / "small.dcm")]
    try:
        scu = AE(ae_title="SENDER")
        scu.add_requested_context(XRayAngiographicImageStorage, ExplicitVRLittleEndian)
        scu.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="PDATA")
        assert assoc.is_established
        try:
            assert [assoc.send_c_store(path).Status for path in sent] == [0x0000, 0x0000]
        finally:
            assoc.release()
    finally:
        server.shutdown()

    assert [_dataset_bytes(raw) for raw in received] == [_dataset_bytes(p.read_bytes()) for p in sent]
    data_pdus = [pdu for pdu in pdus if isinstance(pdu, P_DATA_TF)]
    assert len(data_pdus) > 8, "the run should have come in many PDUs"
    values = [item.presentation_data_value for pdu in data_pdus for item in pdu.presentation_data_value_items]
    assert all(type(v) is memoryview and v.readonly and type(v.obj) is ReceivedBuffer for v in values)
    buffers = {id(v.obj) for v in values}
    assert len(buffers) == len(data_pdus), "one buffer per PDU, every value a view of its PDU's"
    assert transitions.count(("DT-2", "Evt10")) == len(data_pdus)


class _Reading:
    """What pdata's _read_pdu_data touches of a DUL, reading a real socket."""

    def __init__(self, sock, queued=()):
        import queue
        from types import SimpleNamespace

        from dsmpacs.archive.storage import ReceivedBuffer

        def recv(count):
            buf = ReceivedBuffer(count)
            view, got = memoryview(buf), 0
            while got < count:
                n = sock.recv_into(view[got:])
                if not n:
                    return bytes(buf[:got])
                got += n
            return buf

        self.socket = SimpleNamespace(recv=recv)
        self.event_queue, self._recv_pdu = queue.Queue(), queue.Queue()
        for event in queued:
            self.event_queue.put(event)
        self.assoc = SimpleNamespace(get_handlers=lambda event: [])

    def events(self) -> list[str]:
        return list(self.event_queue.queue)


def test_a_read_p_data_tf_is_queued_as_pynetdicom_queues_it(socket_pair):
    """Evt10 behind what is queued already, and a PDU whose items are pynetdicom's
    decode of the same bytes, each value a read-only view of the body's buffer."""
    from pynetdicom.pdu import P_DATA_TF

    from dsmpacs.archive.storage import ReceivedBuffer
    from dsmpacs.dicom.engine import pdata

    ours, peer = socket_pair
    values = [(1, b"\x02" + b"D" * 300), (3, b"\x03" + b"C" * 20)]
    pdu = _p_data_tf(values)
    theirs = P_DATA_TF()
    theirs.decode(pdu)
    expected = [(i.presentation_context_id, i.presentation_data_value) for i in theirs.presentation_data_value_items]
    for queued in ((), ("Evt12",)):
        dul = _Reading(ours, queued=queued)
        peer.sendall(pdu)
        pdata._read_pdu_data(dul)
        assert dul.events() == [*queued, "Evt10"]
        items = dul._recv_pdu.get_nowait().presentation_data_value_items
        assert [(i.presentation_context_id, bytes(i.presentation_data_value)) for i in items] == expected
        assert all(i.presentation_data_value.readonly and type(i.presentation_data_value.obj) is ReceivedBuffer
                   for i in items)


def test_a_bad_pdu_is_answered_with_pynetdicom_s_events(socket_pair):
    """An undecodable PDV list or an unknown PDU type: Evt19 (A-ABORT); a body that
    ends early: Evt17 (connection closed). No PDU is queued."""
    import socket

    from dsmpacs.dicom.engine import pdata

    ours, peer = socket_pair
    cases = [(struct.pack(">BBL", 4, 0, 5) + struct.pack(">LB", 0, 1), "Evt19"),
             (struct.pack(">BBL", 9, 0, 0), "Evt19")]
    for raw, event in cases:
        dul = _Reading(ours)
        peer.sendall(raw)
        pdata._read_pdu_data(dul)
        assert dul.events() == [event] and dul._recv_pdu.empty()
    dul = _Reading(ours)
    peer.sendall(_p_data_tf([(1, b"\x02" + b"x" * 100)])[:50])
    peer.shutdown(socket.SHUT_WR)
    pdata._read_pdu_data(dul)
    assert dul.events() == ["Evt17"] and dul._recv_pdu.empty()


def engine_original_primitive(message):
    """pynetdicom's own conversion, from the function the engine wrapped."""
    from pynetdicom.dimse_messages import DIMSEMessage

    wrapper = DIMSEMessage.message_to_primitive
    original = next(cell.cell_contents for cell in wrapper.__closure__ if callable(cell.cell_contents))
    return original(message)
