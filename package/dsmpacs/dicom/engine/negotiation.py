"""Which transfer syntax this archive accepts for each proposed presentation context.

pynetdicom, as acceptor, takes the first transfer syntax the requestor lists
that it supports; with ``UNRESTRICTED_STORAGE_SERVICE`` it takes the first one
proposed, whatever it is. That has two faults for an archive:

* a context that offers only syntaxes nobody can decode (``1.2.3.4.5.6.7.8``)
  is accepted, and a C-STORE on it is archived as if it could be read;
* a requestor listing Implicit VR Little Endian before Explicit (pynetdicom's
  getscu, many storescu builds) gets Implicit, so a C-GET re-encodes runs that
  are stored as Explicit VR: the bytes it receives are not the originals.

After pynetdicom's own negotiation, each accepted context is re-decided here
from the requestor's proposal: syntaxes that are neither known to pydicom nor
listed in the ``dicom_extra_transfer_syntaxes`` setting are dropped; when
Implicit VR Little Endian would be chosen and Explicit VR Little Endian was
proposed too, Explicit is chosen (it carries the VR, so nothing is re-encoded
for an instance stored that way); otherwise the requestor's order stands, so
a modality that proposes its compressed syntax first keeps it (the bit-exact
path). A context left with no usable syntax is rejected with result 4
(transfer syntaxes not supported, PS3.8 9.3.3.2).

pynetdicom has no negotiation hook, so the two functions its ACSE module
imports are wrapped. The extra syntaxes are per AE (``allow_transfer_syntaxes``),
read on the association's own thread.
"""
from __future__ import annotations

import logging
import threading

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import acse as _acse

log = logging.getLogger(__name__)

ACCEPTED = 0x00
TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04
_AE_ATTRIBUTE = "_dsmpacs_extra_transfer_syntaxes"
_installed = False


def allow_transfer_syntaxes(ae, uids) -> None:
    """Accept these (private, vendor) transfer syntaxes on ``ae`` besides the known ones."""
    setattr(ae, _AE_ATTRIBUTE, frozenset(str(u).strip() for u in uids if str(u).strip()))


def choose(proposed: list[str], supported: list[str] | None, extra: frozenset[str]) -> str | None:
    """The transfer syntax to accept among ``proposed`` (requestor's order), or None.

    ``supported`` is what the acceptor's context lists (None: anything known)."""
    usable = [ts for ts in proposed
              if (ts in extra or _known(ts)) and (supported is None or ts in supported)]
    if not usable:
        return None
    if usable[0] == ImplicitVRLittleEndian and ExplicitVRLittleEndian in usable:
        return str(ExplicitVRLittleEndian)
    return usable[0]


def _known(uid: str) -> bool:
    """A transfer syntax of the DICOM standard (pydicom's dictionary, retired ones too)."""
    try:
        return UID(uid).is_transfer_syntax
    except (ValueError, TypeError):
        return False


def _extra_for_current_association() -> frozenset[str]:
    ae = getattr(threading.current_thread(), "ae", None)
    return getattr(ae, _AE_ATTRIBUTE, frozenset())


def _redecide(rq_contexts, ac_contexts, result, unrestricted: bool) -> None:
    proposals = {cx.context_id: [str(ts) for ts in cx.transfer_syntax] for cx in rq_contexts}
    supported = {str(cx.abstract_syntax): [str(ts) for ts in cx.transfer_syntax] for cx in ac_contexts or []}
    extra = _extra_for_current_association()
    for cx in result:
        if cx.result != ACCEPTED:
            continue
        abstract = str(cx.abstract_syntax)
        listed = supported.get(abstract)       # None: accepted as storage, any known syntax
        if listed is None and not unrestricted:
            continue
        proposed = proposals.get(cx.context_id, [])
        chosen = choose(proposed, listed, extra)
        if chosen is None:
            log.warning("presentation context %s (%s) rejected: no known transfer syntax among %s",
                        cx.context_id, abstract, ", ".join(proposed) or "none")
            cx.result = TRANSFER_SYNTAXES_NOT_SUPPORTED
            cx.transfer_syntax = [proposed[0]] if proposed else cx.transfer_syntax
            cx._as_scu = False
            cx._as_scp = False
        elif chosen != str(cx.transfer_syntax[0]):
            cx.transfer_syntax = [chosen]


def install() -> None:
    """Wrap pynetdicom's acceptor negotiation (once per process; engine.install)."""
    global _installed
    if _installed:
        return
    as_acceptor, unrestricted = _acse.negotiate_as_acceptor, _acse.negotiate_unrestricted

    def negotiate_as_acceptor(rq_contexts, ac_contexts, roles=None):
        result, reply_roles = as_acceptor(rq_contexts, ac_contexts, roles)
        _redecide(rq_contexts, ac_contexts, result, unrestricted=False)
        return result, reply_roles

    def negotiate_unrestricted(rq_contexts, ac_contexts, roles=None):
        result, reply_roles = unrestricted(rq_contexts, ac_contexts, roles)
        _redecide(rq_contexts, ac_contexts, result, unrestricted=True)
        return result, reply_roles

    _acse.negotiate_as_acceptor = negotiate_as_acceptor
    _acse.negotiate_unrestricted = negotiate_unrestricted
    _installed = True
