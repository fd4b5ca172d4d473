"""Storage Commitment Push Model SCP against a real server process, with a pynetdicom
modality as the SCU: on the same association, and on a new one after the modality
released (the usual behaviour of angiography systems)."""
from __future__ import annotations

import threading

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, StorageCommitmentPushModelInstance

from tests import factories as f
from tests.peers import free_port
from tests.retrieval import register, stored_path

REPORT_TIMEOUT = 60


class Modality:
    """The SCU side: sends N-ACTION and collects the N-EVENT-REPORTs it receives,
    on its requesting association or on its own listener."""

    def __init__(self, ae_title: str = "ANGIO1", listen: bool = False):
        self.ae_title = ae_title
        self.reports: list[tuple[int, Dataset, str]] = []     # (event type, information, how)
        self.arrived = threading.Event()
        self.server = None
        self.port = free_port()
        if listen:
            scp = AE(ae_title=ae_title)
            scp.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
            self.server = scp.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report,
                                                          ["new association"])])

    def _on_report(self, event, how: str):
        self.reports.append((event.event_type, event.event_information, how))
        self.arrived.set()
        return 0x0000, None

    def request(self, server, references: list[tuple[str, str]], *, release_at_once: bool,
                transaction_uid: str | None = None, port: int | None = None,
                tls_args=None) -> tuple[int, str]:
        """Send the N-ACTION (to ``port``, default the server's DICOM port; over TLS
        with ``tls_args``); returns (N-ACTION status, transaction UID)."""
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        # _on_report wakes this thread before pynetdicom sends the N-EVENT-REPORT's answer:
        # releasing then would ask the DUL to send it after the A-RELEASE-RQ (an invalid
        # event, raised in the DUL thread). So release only once the answer has left.
        answered = threading.Event()

        def sent(event):
            if type(event.message).__name__ == "N_EVENT_REPORT_RSP":
                answered.set()
        assoc = ae.associate("127.0.0.1", port or server.port, ae_title=server.ae_title, tls_args=tls_args,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report, ["same association"]),
                                           (evt.EVT_DIMSE_SENT, sent)])
        assert assoc.is_established
        info = Dataset()
        info.TransactionUID = transaction_uid or generate_uid()
        info.ReferencedSOPSequence = []
        for sop_class, sop_instance in references:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            info.ReferencedSOPSequence.append(item)
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
        if not release_at_once:
            self.arrived.wait(REPORT_TIMEOUT)
            if self.reports and self.reports[-1][2] == "same association":
                assert answered.wait(REPORT_TIMEOUT), "the N-EVENT-REPORT was never answered"
        assoc.release()
        return int(status.Status), str(info.TransactionUID)

    def wait(self) -> tuple[int, Dataset, str]:
        assert self.arrived.wait(REPORT_TIMEOUT), "no N-EVENT-REPORT arrived"
        return self.reports[0]

    def stop(self):
        if self.server is not None:
            self.server.shutdown()


def outcome(info: Dataset) -> tuple[dict[str, str], dict[str, int]]:
    committed = {str(i.ReferencedSOPInstanceUID): str(i.ReferencedSOPClassUID)
                 for i in info.get("ReferencedSOPSequence", [])}
    failed = {str(i.ReferencedSOPInstanceUID): int(i.FailureReason) for i in info.get("FailedSOPSequence", [])}
    return committed, failed


@pytest.fixture
def stored(server, tmp_path):
    """Three CT slices stored by dcmtk storescu from the modality's AE title."""
    paths = [f.write(f.ct_slice(size=32, instance_number=n), tmp_path / f"ct{n}.dcm") for n in range(3)]
    assert server.storescu(*paths, extra=("-aet", "ANGIO1")).returncode == 0
    return [(f.CT, f.read_uid(p)) for p in paths]


@pytest.fixture
def modality():
    m = Modality(listen=True)
    yield m
    m.stop()


def test_all_verified_is_committed_on_the_same_association(server, stored, modality):
    register(server, "angio", "ANGIO1", modality.port)
    status, transaction = modality.request(server, stored, release_at_once=False)
    assert status == 0x0000
    event_type, info, how = modality.wait()
    assert how == "same association"
    assert event_type == 1 and info.TransactionUID == transaction
    committed, failed = outcome(info)
    assert committed == {uid: cls for cls, uid in stored} and failed == {}
    assert info.RetrieveAETitle == server.ae_title


def test_unknown_altered_missing_and_wrong_class_are_failures(server, stored, modality, tmp_path):
    """A false "committed" is the worst bug: each of these must come back failed."""
    register(server, "angio", "ANGIO1", modality.port)
    (_, good), (_, altered), (_, gone) = stored
    path = stored_path(server, altered)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF                                  # one pixel changed on disk, same size
    path.write_bytes(bytes(data))
    stored_path(server, gone).unlink()
    unknown = generate_uid()
    references = [(f.CT, good), (f.CT, altered), (f.CT, gone), (f.CT, unknown), (f.SC, good)]
    status, transaction = modality.request(server, references, release_at_once=False)
    assert status == 0x0000
    event_type, info, _ = modality.wait()
    assert event_type == 2 and info.TransactionUID == transaction
    committed = [str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence]
    assert committed == [good]
    reasons = [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID), int(i.FailureReason))
               for i in info.FailedSOPSequence]
    assert reasons == [(f.CT, altered, 0x0110), (f.CT, gone, 0x0110), (f.CT, unknown, 0x0112),
                       (f.SC, good, 0x0119)]
    assert server.logged("no longer matches its checksum", timeout=30)
    assert server.logged("is missing")          # logged after it, maybe not yet written


def test_report_goes_to_a_new_association_after_release(server, stored, modality):
    register(server, "angio", "ANGIO1", modality.port)
    status, transaction = modality.request(server, stored[:1], release_at_once=True)
    assert status == 0x0000
    event_type, info, how = modality.wait()
    assert how == "new association"
    assert event_type == 1 and info.TransactionUID == transaction
    assert outcome(info) == ({stored[0][1]: f.CT}, {})
    assert server.logged(f"storage commitment {transaction} reported to", timeout=30)
    assert "on a new association" in server.log()


def test_quarantined_conflict_is_not_committed(server, stored, modality, tmp_path):
    """The modality may hold the copy that went to quarantine, not the archived one."""
    register(server, "angio", "ANGIO1", modality.port)
    uid = stored[0][1]
    conflicting = f.write(f.ct_slice(size=32, sop_uid=uid), tmp_path / "conflict.dcm")
    server.storescu(conflicting, extra=("-aet", "ANGIO1"))
    modality.request(server, [(f.CT, uid)], release_at_once=False)
    event_type, info, _ = modality.wait()
    assert event_type == 2 and outcome(info) == ({}, {uid: 0x0110})


def test_unregistered_modality_is_refused(server, stored):
    stranger = Modality("STRANGER")
    status, _ = stranger.request(server, stored, release_at_once=True)
    assert status == 0x0124
    assert server.logged("storage commitment refused for STRANGER")


def test_request_without_references_is_invalid(server, stored, modality):
    register(server, "angio", "ANGIO1", modality.port)
    status, _ = modality.request(server, [], release_at_once=True)
    assert status == 0x0115
    assert server.alive()
