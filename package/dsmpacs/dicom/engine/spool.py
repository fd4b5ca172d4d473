"""Make pynetdicom's chunked C-STORE receive write into the archive's tmp dir.

With ``STORE_RECV_CHUNKED_DATASET`` (set by engine.install) pynetdicom streams each incoming dataset
to a ``NamedTemporaryFile`` instead of decoding it in memory. For associations
of our own AE we replace that file with the storage's ``SpoolWriter``: the
file lands on the storage filesystem (so publishing is a rename, never a
copy), is hashed as it arrives (no second read of a 500 MB run), and a full
disk is recorded instead of raised, so the handler can answer 0xA700 rather
than the association aborting.

The File Meta group of that file is written by ``archive.part10`` instead of
pydicom: the same bytes as import and STOW-RS produce (our implementation UID,
the calling AE as Source AE), and a tenth of the cost on the path between the
command and the first data PDU.

pynetdicom leaves a spool file behind whenever a dataset does not complete: the
peer aborts or disconnects mid-dataset, a bound is exceeded (engine/limits.py),
a C-STORE arrives on a refused presentation context (pynetdicom fails after
opening the file), or the association ends with a received C-STORE not yet
served. The file then stays on disk, and open, until the process exits. Here
the DUL thread abandons its unfinished message when it ends (taking the DUL's
turn, engine/inline.py), and the association thread abandons queued, unserved
C-STORE datasets when it ends.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from tempfile import NamedTemporaryFile

from pynetdicom import association as _association
from pynetdicom import dimse_messages
from pynetdicom import dul as _dul

from dsmpacs.archive.part10 import encode_file_meta
from dsmpacs.archive.storage import SpoolWriter, Storage
from dsmpacs.dicom.engine import inline

log = logging.getLogger(__name__)
_installed = False
_AE_ATTRIBUTE = "_dsmpacs_storage"
_original_create_file_meta = dimse_messages.create_file_meta
_original_write_file_meta_info = dimse_messages.write_file_meta_info


class _MetaRequest:
    """What pynetdicom asked the meta to hold, encoded once we know the file."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


def _create_file_meta(**kwargs) -> _MetaRequest:
    return _MetaRequest(**kwargs)


def _write_file_meta_info(fp, meta, *args, **kwargs):
    if not isinstance(meta, _MetaRequest):
        return _original_write_file_meta_info(fp, meta, *args, **kwargs)
    if isinstance(fp, SpoolWriter):
        kw = meta.kwargs
        fp.write(encode_file_meta(str(kw["sop_class_uid"]), str(kw["sop_instance_uid"]),
                                  str(kw["transfer_syntax"]), getattr(fp, "source_ae", None)))
        return None
    return _original_write_file_meta_info(fp, _original_create_file_meta(**meta.kwargs), *args, **kwargs)


def _spool_factory(*args, **kwargs):
    # Called on the thread doing the receiving association's DUL work: its DUL
    # thread, or the association thread itself (engine/inline.py).
    thread = threading.current_thread()
    assoc = thread if isinstance(thread, _association.Association) else getattr(thread, "assoc", None)
    storage: Storage | None = getattr(getattr(assoc, "ae", None), _AE_ATTRIBUTE, None)
    if storage is None:
        return NamedTemporaryFile(*args, **kwargs)
    spool = storage.spool(suffix=".dcm")
    spool.source_ae = assoc.requestor.ae_title if assoc.is_acceptor else assoc.acceptor.ae_title
    return spool


def bind_storage(ae, storage: Storage) -> None:
    """Route chunked C-STORE datasets received by ``ae`` into ``storage``."""
    setattr(ae, _AE_ATTRIBUTE, storage)


def abandon(spooled) -> None:
    """Close and remove a spool file (ours or pynetdicom's NamedTemporaryFile)."""
    if spooled is None:
        return
    if isinstance(spooled, SpoolWriter):
        spooled.abandon()
        return
    with contextlib.suppress(OSError):
        spooled.close()
    with contextlib.suppress(OSError):
        os.unlink(spooled.name)


def abandon_message(message) -> None:
    """Abandon the spool file of a DIMSE message still being received."""
    spooled = getattr(message, "_data_set_file", None)
    if spooled is not None:
        message._data_set_file = None
        abandon(spooled)
        log.info("removed the partial dataset %s", getattr(spooled, "name", "?"))


def abandon_unserved(dimse) -> None:
    """Abandon the spool files of received C-STORE requests no handler will serve.
    Other queued messages are left alone: a user thread may still be reading them."""
    pending = getattr(dimse, "msg_queue", None)
    if pending is None:
        return
    with pending.mutex:
        items = list(pending.queue)
        unserved = [primitive for _cx, primitive in items if getattr(primitive, "_dataset_file", None)]
        pending.queue.clear()
        pending.queue.extend(item for item in items if not getattr(item[1], "_dataset_file", None))
    for primitive in unserved:
        abandon(primitive._dataset_file)


def install() -> None:
    """Replace pynetdicom's spool file factory and File Meta writer, and abandon
    unfinished spool files when an association's threads end (engine.install)."""
    global _installed
    if _installed:
        return
    _installed = True
    dimse_messages.NamedTemporaryFile = _spool_factory
    dimse_messages.create_file_meta = _create_file_meta
    dimse_messages.write_file_meta_info = _write_file_meta_info
    original_dul_run = _dul.DULServiceProvider.run_reactor
    original_assoc_run = _association.Association.run_reactor

    def dul_run_reactor(self) -> None:
        try:
            original_dul_run(self)
        finally:
            # The message is fed only by whoever holds the DUL's turn
            # (engine/inline.py): take it, so the association thread is not
            # writing to the file being dropped. (A DUL made before inline's
            # install has no turn, and only its own thread feeds it.)
            with inline.turn(self) or contextlib.nullcontext():
                abandon_message(getattr(self.assoc.dimse, "message", None))

    def assoc_run_reactor(self) -> None:
        try:
            original_assoc_run(self)
        finally:
            # As acceptor, this thread is the only one that serves requests: what it
            # left queued will not be served. (As requestor, the user's thread may.)
            if self.is_acceptor:
                abandon_unserved(self.dimse)

    _dul.DULServiceProvider.run_reactor = dul_run_reactor
    _association.Association.run_reactor = assoc_run_reactor
