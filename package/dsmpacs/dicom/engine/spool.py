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
"""
from __future__ import annotations

import threading
from tempfile import NamedTemporaryFile

from pynetdicom import dimse_messages

from dsmpacs.archive.part10 import encode_file_meta
from dsmpacs.archive.storage import SpoolWriter, Storage

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
    # Called on the DUL thread of the association receiving the dataset.
    assoc = getattr(threading.current_thread(), "assoc", None)
    storage: Storage | None = getattr(getattr(assoc, "ae", None), _AE_ATTRIBUTE, None)
    if storage is None:
        return NamedTemporaryFile(*args, **kwargs)
    spool = storage.spool(suffix=".dcm")
    spool.source_ae = assoc.requestor.ae_title if assoc.is_acceptor else assoc.acceptor.ae_title
    return spool


def bind_storage(ae, storage: Storage) -> None:
    """Route chunked C-STORE datasets received by ``ae`` into ``storage``."""
    setattr(ae, _AE_ATTRIBUTE, storage)


def install() -> None:
    """Replace pynetdicom's spool file factory and File Meta writer (engine.install)."""
    dimse_messages.NamedTemporaryFile = _spool_factory
    dimse_messages.create_file_meta = _create_file_meta
    dimse_messages.write_file_meta_info = _write_file_meta_info
