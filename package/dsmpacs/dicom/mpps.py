"""Modality Performed Procedure Step SCP (PS3.4 Annex F.7): N-CREATE and N-SET.

A modality reports that it started (N-CREATE, IN PROGRESS), then completed or
discontinued (N-SET) the procedure of a worklist order; archive/performed.py
moves the order's state along. The step names its order in the Scheduled Step
Attributes Sequence (Accession Number, Scheduled Procedure Step ID). Only the
state is kept: the performed series, doses and other attributes are accepted
and not stored (the images themselves arrive by C-STORE).

Access: a remote AE that may store may report procedure steps (the modality
that sends the images); the same access policy as C-STORE otherwise.
"""
from __future__ import annotations

import logging

from pynetdicom import evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from dsmpacs.archive import Archive
from dsmpacs.archive.access import AccessPolicy, Action
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.performed import PerformedSteps, StepError
from dsmpacs.archive.uids import clean_uid, is_valid_uid
from dsmpacs.dicom.associations import peer_of

log = logging.getLogger(__name__)

MPPS = str(ModalityPerformedProcedureStep)       # 1.2.840.10008.3.1.2.3.3
SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110     # also: the step is final and may no longer be updated
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
NOT_AUTHORIZED = 0x0124


def install(ae) -> None:
    ae.add_supported_context(MPPS)


def handlers(archive: Archive, policy: AccessPolicy) -> list:
    steps = PerformedSteps(archive.index)
    return [(evt.EVT_N_CREATE, handle_n_create, [steps, policy]),
            (evt.EVT_N_SET, handle_n_set, [steps, policy])]


def _allowed(event, policy: AccessPolicy, what: str) -> bool:
    assoc = event.assoc
    allowed, reason = policy.allows(Action.STORE, assoc.requestor.ae_title, assoc.requestor.address)
    if not allowed:
        log.warning("%s refused for %s (%s): %s", what, assoc.requestor.ae_title, peer_of(assoc), reason)
    return allowed


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value or "").strip()


def handle_n_create(event, steps: PerformedSteps, policy: AccessPolicy):
    """N-CREATE of a Modality Performed Procedure Step. Statuses:
      0x0000 Success: the step is recorded; its order (if one matched) is in progress
      0x0124 Refused: not authorized (the calling AE may not store)
      0x0120 Missing attribute: no Affected SOP Instance UID, or no Performed
             Procedure Step Status
      0x0106 Invalid attribute value: an invalid SOP Instance UID, or a status other
             than IN PROGRESS
      0x0111 Duplicate SOP instance: a step with this SOP Instance UID exists
      0x0110 Processing failure: undecodable attribute list, or the index database
             is unreachable
    """
    try:
        if not _allowed(event, policy, "MPPS N-CREATE"):
            return NOT_AUTHORIZED, None
        uid = clean_uid(event.request.AffectedSOPInstanceUID or "")
        attributes = event.attribute_list
        status = _text(attributes, "PerformedProcedureStepStatus").upper()
        if not uid or not status:
            return MISSING_ATTRIBUTE, None
        if not is_valid_uid(uid):
            return INVALID_ATTRIBUTE_VALUE, None
        items = list(attributes.get("ScheduledStepAttributesSequence", None) or [])
        step = steps.started(uid, status, accessions=[_text(i, "AccessionNumber") for i in items],
                             step_ids=[_text(i, "ScheduledProcedureStepID") for i in items],
                             calling_ae=str(event.assoc.requestor.ae_title).strip())
    except StepError as exc:
        log.warning("MPPS N-CREATE from %s: %s", event.assoc.requestor.ae_title, exc)
        return (DUPLICATE_INSTANCE if exc.code == "duplicate" else INVALID_ATTRIBUTE_VALUE), None
    except IndexUnavailable as exc:
        log.error("MPPS N-CREATE from %s: %s", event.assoc.requestor.ae_title, exc)
        return PROCESSING_FAILURE, None
    except Exception as exc:        # pydicom decodes lazily and may raise anything
        log.warning("MPPS N-CREATE from %s: undecodable attribute list: %s",
                    event.assoc.requestor.ae_title, exc)
        return PROCESSING_FAILURE, None
    log.info("MPPS %s %s from %s (order %s)", uid, step.status, event.assoc.requestor.ae_title,
             step.accession_number or "none")
    return SUCCESS, None


def handle_n_set(event, steps: PerformedSteps, policy: AccessPolicy):
    """N-SET of a Modality Performed Procedure Step. Statuses:
      0x0000 Success: recorded; COMPLETED or DISCONTINUED ends the step and its order
      0x0124 Refused: not authorized (the calling AE may not store)
      0x0112 No such object instance: no step with this SOP Instance UID
      0x0110 Processing failure: the step is already COMPLETED or DISCONTINUED and
             may no longer be updated, the attribute list cannot be decoded, or the
             index database is unreachable
      0x0106 Invalid attribute value: an unknown Performed Procedure Step Status
    """
    try:
        if not _allowed(event, policy, "MPPS N-SET"):
            return NOT_AUTHORIZED, None
        uid = clean_uid(event.request.RequestedSOPInstanceUID or "")
        status = _text(event.modification_list, "PerformedProcedureStepStatus").upper() or None
        step = steps.update(uid, status)
    except StepError as exc:
        log.warning("MPPS N-SET from %s: %s", event.assoc.requestor.ae_title, exc)
        return (NO_SUCH_INSTANCE if exc.code == "no-such-step" else
                PROCESSING_FAILURE if exc.code == "final" else INVALID_ATTRIBUTE_VALUE), None
    except IndexUnavailable as exc:
        log.error("MPPS N-SET from %s: %s", event.assoc.requestor.ae_title, exc)
        return PROCESSING_FAILURE, None
    except Exception as exc:        # pydicom decodes lazily and may raise anything
        log.warning("MPPS N-SET from %s: undecodable modification list: %s",
                    event.assoc.requestor.ae_title, exc)
        return PROCESSING_FAILURE, None
    log.info("MPPS %s %s from %s", uid, step.status, event.assoc.requestor.ae_title)
    return SUCCESS, None
