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
    # Received as from the wire: the command set decoded from its bytes, elements still raw.
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
    ours = pdv_items(pdu)
    assert [(i.presentation_context_id, bytes(i.presentation_data_value)) for i in ours] == values
    assert [(i.presentation_context_id, i.presentation_data_value)
            for i in theirs.presentation_data_value_items] == values
    assert all(i.presentation_data_value.obj is pdu for i in ours)
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
            pdv_items(bad)


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


def engine_original_primitive(message):
    """pynetdicom's own conversion, from the function the engine wrapped."""
    from pynetdicom.dimse_messages import DIMSEMessage

    wrapper = DIMSEMessage.message_to_primitive
    original = next(cell.cell_contents for cell in wrapper.__closure__ if callable(cell.cell_contents))
    return original(message)
