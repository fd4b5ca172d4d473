"""This archive as a Query/Retrieve client: pull a study from another PACS into the archive.

Whatever arrives goes through the single ingest path (Ingest.store), exactly
as if a modality had sent it:

* C-MOVE (default): the remote sends the instances to this archive's own AE
  title, which the remote must know (host and DICOM port of this archive).
  When the archive's daemon holds the port, it receives them. When the port
  is free, a temporary storage listener with the same AE title, address and
  port runs in this process for the duration of the retrieve. The remote proposes its
  stored transfer syntax and it is accepted, so originals arrive unchanged.
* C-GET: the instances come back on the same association; this process
  receives them. Only uncompressed and lossless syntaxes are offered (never a
  lossy one a remote might compress into), so a remote holding lossy JPEG
  originals decompresses them.
"""
from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import build_role, evt
from pynetdicom import sop_class as sc

from dsmpacs.archive import Archive
from dsmpacs.archive.peers import Peer
from dsmpacs.archive.uids import clean_uid
from dsmpacs.dicom.associations import handle_conn_open
from dsmpacs.dicom.connect import open_association, this_archive
from dsmpacs.dicom.engine import spool
from dsmpacs.dicom.scu import AssociationFailed, client_ae, echo
from dsmpacs.dicom.store import handle_store
from dsmpacs.settings import Settings

log = logging.getLogger(__name__)

# What a C-GET offers to receive: the image and document classes of an
# angiography suite and a small hospital, plus Siemens' private CSA objects.
GET_STORAGE_CLASSES = (
    sc.XRayAngiographicImageStorage, sc.EnhancedXAImageStorage, sc.XRayRadiofluoroscopicImageStorage,
    sc.EnhancedXRFImageStorage, sc.XRay3DAngiographicImageStorage, sc.CTImageStorage,
    sc.EnhancedCTImageStorage, sc.MRImageStorage, sc.EnhancedMRImageStorage, sc.ComputedRadiographyImageStorage,
    sc.DigitalXRayImageStorageForPresentation, sc.DigitalXRayImageStorageForProcessing,
    sc.DigitalMammographyXRayImageStorageForPresentation, sc.UltrasoundImageStorage,
    sc.UltrasoundMultiFrameImageStorage, sc.NuclearMedicineImageStorage, sc.PositronEmissionTomographyImageStorage,
    sc.SecondaryCaptureImageStorage, sc.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleWordSecondaryCaptureImageStorage, sc.MultiFrameTrueColorSecondaryCaptureImageStorage,
    sc.VLPhotographicImageStorage, sc.VLEndoscopicImageStorage, sc.VideoEndoscopicImageStorage,
    sc.RTImageStorage, sc.RTDoseStorage, sc.RTStructureSetStorage, sc.RTPlanStorage,
    sc.GrayscaleSoftcopyPresentationStateStorage, sc.XAXRFGrayscaleSoftcopyPresentationStateStorage,
    sc.KeyObjectSelectionDocumentStorage, sc.BasicTextSRStorage, sc.EnhancedSRStorage,
    sc.ComprehensiveSRStorage, sc.XRayRadiationDoseSRStorage, sc.EncapsulatedPDFStorage,
    sc.RawDataStorage, sc.SpatialRegistrationStorage, sc.SegmentationStorage,
    sc.HemodynamicWaveformStorage, sc.TwelveLeadECGWaveformStorage,
    "1.3.12.2.1107.5.9.1",          # Siemens CSA Non-Image (3D workstation results)
)
GET_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1, JPEGLossless,
                         JPEGLSLossless, JPEG2000Lossless, RLELossless, DeflatedExplicitVRLittleEndian]


@dataclass(frozen=True)
class Received:
    """One instance this process received and handed to Ingest.store."""
    sop_instance_uid: str
    status: int
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0 or 0xB000 <= self.status <= 0xBFFF


@dataclass
class RetrieveReport:
    method: str                                   # move or get
    receiver: str                                 # who stored the instances
    status: int = -1                              # the remote's final status
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)      # as the remote reported them
    received: list[Received] = field(default_factory=list)    # when this process received

    @property
    def ok(self) -> bool:
        return self.status == 0x0000 and all(r.ok for r in self.received)


Progress = Callable[[Dataset], None]          # each pending/final response
OnReceived = Callable[[Received], None]


def identifier(study_uid: str, series_uids: tuple[str, ...] = ()) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series_uids else "STUDY"
    ds.StudyInstanceUID = study_uid
    if series_uids:
        ds.SeriesInstanceUID = list(series_uids)
    return ds


def _recording_store(received: list[Received], on_received: OnReceived | None):
    def handler(event, archive: Archive):
        status = handle_store(event, archive, None)     # we asked for these: no policy check
        code = status if isinstance(status, int) else int(status.Status)
        comment = "" if isinstance(status, int) else str(status.get("ErrorComment", "") or "")
        item = Received(clean_uid(event.request.AffectedSOPInstanceUID), code, comment)
        received.append(item)
        if on_received:
            on_received(item)
        return status
    return handler


def _consume(responses, report: RetrieveReport, progress: Progress | None) -> None:
    for status, ident in responses:
        if "Status" not in status:
            raise AssociationFailed(
                f"{report.method == 'move' and 'C-MOVE' or 'C-GET'}: the peer ended the association without "
                "a final response (timeout or abort)"
                + ("; does it know this archive's AE title and port?" if report.method == "move" else ""))
        report.status = int(status.Status)
        report.completed = int(status.get("NumberOfCompletedSuboperations", report.completed) or 0)
        report.failed = int(status.get("NumberOfFailedSuboperations", report.failed) or 0)
        report.warning = int(status.get("NumberOfWarningSuboperations", report.warning) or 0)
        if ident is not None and "FailedSOPInstanceUIDList" in ident:
            value = ident.FailedSOPInstanceUIDList
            values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
            report.failed_uids = [str(v) for v in values if str(v)]
        if progress:
            progress(status)


def _self_peer(settings: Settings) -> Peer:
    return this_archive(settings)


def daemon_listening(settings: Settings) -> bool:
    """Whether this archive's own DICOM listener answers C-ECHO."""
    try:
        return echo(settings, _self_peer(settings)) == 0
    except AssociationFailed:
        return False


class PortInUse(Exception):
    """Something already listens on the archive's DICOM port (normally the daemon)."""


class TemporaryListener:
    """A storage-only listener on the archive's AE title, address and port that
    stores through Ingest.store, for a C-MOVE run while the daemon is down."""

    def __init__(self, settings: Settings, archive: Archive, on_received: OnReceived | None = None):
        self.settings = settings
        self.archive = archive
        self.received: list[Received] = []
        self.on_received = on_received
        self.server = None

    def __enter__(self) -> "TemporaryListener":
        ae = client_ae(self.settings)
        ae.require_called_aet = False
        spool.bind_storage(ae, self.archive.storage)
        try:
            self.server = ae.start_server(
                (self.settings.dicom_host, self.settings.dicom_port), block=False, evt_handlers=[
                    (evt.EVT_CONN_OPEN, handle_conn_open),
                    (evt.EVT_C_STORE, _recording_store(self.received, self.on_received), [self.archive])])
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(str(exc)) from None
            raise AssociationFailed(f"cannot listen on {self.settings.dicom_host}:{self.settings.dicom_port} "
                                    f"to receive the C-MOVE: {exc.strerror or exc}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.shutdown()


def retrieve_move(settings: Settings, archive: Archive, peer: Peer, study_uid: str,
                  series_uids: tuple[str, ...] = (), progress: Progress | None = None,
                  on_received: OnReceived | None = None) -> RetrieveReport:
    """C-MOVE the study (or series) from ``peer`` to this archive's AE title.

    If the archive's port is free, this process listens there while the move
    runs; if it is taken, whoever listens (the daemon, normally) receives."""
    if not settings.dicom_port:
        raise AssociationFailed("dicom_port is 0: a remote cannot send a C-MOVE to an ephemeral port; "
                                "set the port the remote has registered for this archive")
    try:
        if not settings.dicom_plain:
            # The temporary listener speaks plain DICOM only: with TLS only, the daemon receives.
            if not daemon_listening(settings):
                raise AssociationFailed("dicom_plain is false and the archive daemon is not running: "
                                        "start it to receive the C-MOVE on the TLS port")
            raise PortInUse("TLS only")
        listener = TemporaryListener(settings, archive, on_received).__enter__()
    except PortInUse:
        receiver = (f"the running archive daemon ({settings.ae_title})" if daemon_listening(settings) else
                    f"whatever listens on port {settings.dicom_port} (it did not answer a C-ECHO from "
                    f"{settings.ae_title}; check it is this archive's daemon)")
        report = RetrieveReport("move", receiver)
        _move(settings, peer, study_uid, series_uids, report, progress)
        return report
    report = RetrieveReport("move", f"a temporary listener ({settings.ae_title} on port "
                                    f"{settings.dicom_port})")
    try:
        _move(settings, peer, study_uid, series_uids, report, progress)
    finally:
        listener.__exit__(None, None, None)
    report.received = listener.received
    return report


def _move(settings, peer, study_uid, series_uids, report, progress) -> None:
    ae = client_ae(settings)
    ae.add_requested_context(sc.StudyRootQueryRetrieveInformationModelMove)
    assoc = open_association(ae, peer)
    try:
        _consume(assoc.send_c_move(identifier(study_uid, series_uids), settings.ae_title,
                                   sc.StudyRootQueryRetrieveInformationModelMove), report, progress)
    finally:
        if assoc.is_established:
            assoc.release()


def retrieve_get(settings: Settings, archive: Archive, peer: Peer, study_uid: str,
                 series_uids: tuple[str, ...] = (), progress: Progress | None = None,
                 on_received: OnReceived | None = None) -> RetrieveReport:
    """C-GET the study (or series) from ``peer``; this process stores what arrives."""
    report = RetrieveReport("get", "this command, on the C-GET association")
    ae = client_ae(settings)
    spool.bind_storage(ae, archive.storage)
    ae.add_requested_context(sc.StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class in GET_STORAGE_CLASSES:
        ae.add_requested_context(sop_class, GET_TRANSFER_SYNTAXES)
        roles.append(build_role(sop_class, scp_role=True))
    lock = threading.Lock()
    received: list[Received] = []

    def locked_on_received(item: Received) -> None:
        with lock:
            if on_received:
                on_received(item)

    assoc = open_association(ae, peer, ext_neg=roles, evt_handlers=[
        (evt.EVT_C_STORE, _recording_store(received, locked_on_received), [archive])])
    try:
        _consume(assoc.send_c_get(identifier(study_uid, series_uids),
                                  sc.StudyRootQueryRetrieveInformationModelGet), report, progress)
    finally:
        if assoc.is_established:
            assoc.release()
    report.received = received
    return report
