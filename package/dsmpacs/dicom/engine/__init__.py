"""The DICOM engine: every change this archive makes to pynetdicom, in one package.

pynetdicom does the protocol (PDUs, the DUL state machine, DIMSE encoding,
association negotiation). Where its behaviour does not fit an archive that
receives 500 MB angiography runs from hostile networks, the change lives here,
is installed once per process by ``install()``, called from the composition
root (``dsmpacs.app.install_engine``, which the process entry point
``dsmpacs.cli.main`` runs before any command, and the test suite's conftest),
and is written against exactly one pynetdicom version
(``WRITTEN_FOR``): ``install()`` refuses any other, so an upgrade is a
deliberate act that re-reads each module below against the new source.

What each module changes, and the upstream hook it uses or lacks:

* ``reactor``      idle waits of the DUL and association threads end on events,
                   not 1 ms polls; every waiter on a DIMSE queue is woken, and the
                   reactor counts as paused only while blocked at its checkpoint
                   (the 60 s C-MOVE stall, responses taken by the reactor); the
                   "paused" flag race (pynetdicom #820).
* ``inline``       an idle acceptor's association thread reads its next request
                   itself (plain TCP, Sta6), under a per-DUL turn that the DUL's
                   own reactor loop (replaced, same iteration) also takes: one
                   thread per small C-STORE instead of a hand-over per message.
* ``transport``    PDU reads into one buffer; bounds on announced PDU lengths and on
                   the time a PDU may take (a fixed deadline until the association is
                   established); non-DICOM bytes answered with A-ABORT and a close,
                   without waiting in Sta13.
* ``pdata``        a received PDU's body read into one buffer, a P-DATA-TF's values
                   views of it (``_read_pdu_data`` replaced; other PDU types still
                   decoded by ``_decode_pdu``): none of pynetdicom's five copies of
                   every received byte.
* ``listener``     the listener, capped per peer address at accept
                   (``ae.make_server(server_class=...)`` is the hook); one AE may
                   have a plain and a TLS listener. It hands an accepted connection
                   to a receiving process when the daemon has them
                   (dicom/receivers.py), and ``HandedAssociationServer`` is the same
                   listener in such a process, serving handed connections only.
* ``tls``          DICOM TLS: the acceptor's handshake on the connection's own
                   thread with a fixed deadline (pynetdicom's ``ssl_context`` would
                   handshake on the accept thread), and the requestor's handshake
                   errors recorded (pynetdicom only logs them) for dicom/connect.py.
* ``limits``       a bound on each DIMSE message while its fragments arrive.
* ``spool``        chunked C-STORE receive writes into the storage's staging
                   directory with our File Meta (``_config.STORE_RECV_CHUNKED_DATASET``
                   is the hook; the file factory is not, so it is replaced); the
                   spool of an unfinished message is removed when its association ends.
* ``negotiation``  transfer-syntax choice as acceptor: unknown syntaxes refused
                   per context, Explicit VR Little Endian preferred over Implicit.
* ``routing``      swaps pynetdicom's service classes for ours
                   (``association.uid_to_service_class`` is the only hook).
* ``respond``      a C-STORE-RSP written by the association thread when the DUL
                   would send it next (Sta6, nothing queued, plain TCP), under a
                   per-DUL lock its state machine holds for every action: no wake-up
                   of the DUL thread per instance.
* ``command``      received command sets split into elements by hand, their
                   single numbers and UIDs converted as pydicom converts them
                   (``dimse_messages.decode`` replaced; anything unusual goes to it).
* ``store_service`` C-STORE answered without pynetdicom's per-message detour, and a
                   received C-STORE-RQ turned into its primitive from its six
                   parameters (``DIMSEMessage.message_to_primitive`` is wrapped).
* ``retrieve_class`` C-MOVE/C-GET sub-operations driven by our handlers.
* ``wire``         C-FIND pending responses encoded once per request.

Process-wide pynetdicom settings (``pynetdicom._config``) are set here and
nowhere else.
"""
from __future__ import annotations

import pynetdicom
from pynetdicom import _config

WRITTEN_FOR = "3.0.4"
_installed = False


class EngineVersionError(RuntimeError):
    """pynetdicom is not the version the engine's changes were written against."""


def check_version(version: str | None = None) -> None:
    found = version if version is not None else pynetdicom.__version__
    if found != WRITTEN_FOR:
        raise EngineVersionError(
            f"dsmpacs.dicom.engine was written against pynetdicom {WRITTEN_FOR}, but {found} is "
            f"installed. Install pynetdicom=={WRITTEN_FOR} (constraints.txt), or re-read every "
            f"module of dsmpacs/dicom/engine/ against the new pynetdicom and raise WRITTEN_FOR.")


def install() -> None:
    """Apply every change to pynetdicom, once per process (idempotent)."""
    global _installed
    if _installed:
        return
    check_version()
    from pynetdicom.service_class import QueryRetrieveServiceClass, StorageServiceClass

    from dsmpacs.dicom.engine import (
        command,
        inline,
        limits,
        negotiation,
        pdata,
        reactor,
        respond,
        retrieve_class,
        routing,
        spool,
        store_service,
        transport,
    )

    # Unknown and private abstract syntaxes are negotiated as storage (the
    # transfer syntax is then chosen by engine/negotiation.py).
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    # pynetdicom's "standard" handlers format a summary of every PDU and DIMSE
    # message even when its logger is quiet (a tenth of the receive thread's time
    # on a multi-frame run); our association log says what an operator needs.
    _config.LOG_HANDLER_LEVEL = "none"
    # pynetdicom would render every C-FIND identifier as text (a cost per match,
    # and pydicom's decoder leaves ISO 2022 IR 58 escapes in it).
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    # Datasets are streamed between the socket and files, never decoded whole:
    # received ones into the staging directory (engine/spool.py), sent ones from
    # the stored file, so the bytes go out unchanged.
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = True

    inline.install()        # before reactor and spool, which wrap run_reactor
    reactor.install()
    respond.install()
    transport.install()
    pdata.install()
    spool.install()
    limits.install()
    command.install()
    negotiation.install()
    store_service.install()
    routing.route(StorageServiceClass, store_service.FastStorageServiceClass)
    routing.route(QueryRetrieveServiceClass, retrieve_class.RetrieveServiceClass)
    _installed = True


def installed() -> bool:
    return _installed


def require_installed() -> None:
    """Refuse to build an AE before the composition root installed the engine:
    without it, received datasets would land outside the storage, unhashed."""
    if not _installed:
        raise RuntimeError("dsmpacs.dicom.engine.install() was not called by the composition root")
