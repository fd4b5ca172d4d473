"""One typed Settings object, loaded in layers.

Precedence, lowest first: the defaults below, ``config.toml`` in the data
directory, ``DSMPACS_<FIELD>`` environment variables, then CLI flags. Nothing
here runs at import time; factories receive a ``Settings`` instance.

Every field carries its documentation in its metadata. ``docs/settings.md`` is
generated from it (``dsmpacs settings --markdown``) and a test keeps the two
equal, so the reference cannot drift from the code.
"""
from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

ENV_PREFIX = "DSMPACS_"
CONFIG_FILE = "config.toml"
REDACTED = "********"


class SettingsError(ValueError):
    """A setting has a value the product cannot run with."""


def setting(default: Any, doc: str, *, secret: bool = False, choices: tuple[str, ...] = (),
            minimum: float | None = None, maximum: float | None = None):
    return field(default=default, metadata={
        "doc": doc, "secret": secret, "choices": choices, "minimum": minimum, "maximum": maximum,
    })


_AE_TITLE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII, no backslash


def valid_ae_title(value: str) -> bool:
    """PS3.5 AE VR: 1-16 characters, no backslash, no control characters, not all spaces."""
    return bool(_AE_TITLE_RE.match(value)) and bool(value.strip())


@dataclass(frozen=True)
class Settings:
    # --- where things live -------------------------------------------------
    data_dir: Path = setting(
        Path("data"),
        "Directory for config.toml, the SQLite index, logs and PID files. On DSM this is "
        "SYNOPKG_PKGVAR. Nothing mutable lives beside the code.")
    storage_root: Path | None = setting(
        None,
        "Directory that holds the DICOM files (on DSM, the package's shared folder). Its "
        ".tmp/ and .quarantine/ subdirectories keep staged and conflicting files on the same "
        "filesystem, so a rename publishes a file atomically. Default: <data_dir>/storage.")
    database_url: str | None = setting(
        None,
        "Index database. sqlite:///PATH for the embedded index (WAL mode), or "
        "mysql://USER:PASSWORD@HOST:PORT/DATABASE for MariaDB. Default: "
        "sqlite:///<data_dir>/index.sqlite3.", secret=True)
    log_level: str = setting(
        "INFO", "Log level for the daemon's log.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_file: Path | None = setting(
        None, "Log file of the DICOM daemon and the CLI, rotated at 10 MB with 5 kept. The web "
        "process and the supervising `serve` process write beside it, with -web and -serve "
        "added to the name. Default: <data_dir>/logs/dsmpacs.log.")

    # --- DICOM listener ----------------------------------------------------
    ae_title: str = setting(
        "DSMPACS", "This archive's AE title: 1-16 characters, no backslash or control characters.")
    dicom_host: str = setting(
        "0.0.0.0", "Address the DICOM listener binds to. 0.0.0.0 listens on every interface.")
    dicom_port: int = setting(
        11112, "DICOM port. Ports below 1024 cannot be bound by a DSM 7 package.",
        minimum=0, maximum=65535)
    dicom_tls_port: int = setting(
        0, "DICOM TLS port (PS3.15 BCP 195 non-downgrading profile: TLS 1.2 or 1.3 only), "
        "beside the plain dicom_port, same AE title, services and limits. 2762 is the port "
        "IANA registered for DICOM over TLS. 0: no TLS listener. Needs a certificate in "
        "<data_dir>/tls/ (`dsmpacs tls init` or `dsmpacs tls import`); plaintext and TLS "
        "below 1.2 on this port are refused. See docs/security.md.", minimum=0, maximum=65535)
    dicom_plain: bool = setting(
        True, "Listen for plain (unencrypted) DICOM on dicom_port. false: TLS only (needs "
        "dicom_tls_port); remote AEs marked TLS are refused on the plain port either way.")
    max_associations: int = setting(
        16, "Concurrent DICOM associations accepted; further requests are rejected as "
        "transient (local limit exceeded).", minimum=1, maximum=1000)
    dicom_processes: int = setting(
        2, "Processes that receive DICOM associations. The DICOM daemon accepts every "
        "connection and applies max_associations and max_associations_per_address to all of "
        "them; with 2 or more it hands each new connection to whichever process has the most "
        "of its share of max_associations free, so several modalities sending at once use "
        "several cores (one Python process runs on one). Each further process takes about "
        "100 MB of memory; 1 on a single-core NAS or one short of memory.",
        minimum=1, maximum=16)
    max_associations_per_address: int = setting(
        8, "Concurrent connections accepted from one IP address, counted from the TCP accept "
        "until the association ends; a further connection from that address is closed at once, "
        "before it reaches association negotiation, and logged. Half the default "
        "max_associations, so one misbehaving host cannot take every slot, and above the two "
        "to four parallel associations a busy modality or a migrating PACS opens. Raise it "
        "when several senders reach the archive through one NAT address.",
        minimum=1, maximum=1000)
    max_dimse_message_mb: int = setting(
        4096, "Largest DIMSE message (command and dataset) received, in MiB, enforced while it "
        "arrives: past it the association is aborted (A-ABORT), logged, and the partial spool "
        "file removed. A long angiography run can reach 2 GiB. Datasets that are not C-STORE "
        "data (queries, storage commitment) are held in memory and bounded at 64 MiB, command "
        "sets at 64 KiB, whatever this says.", minimum=1, maximum=65536)
    max_pdu: int = setting(
        262144, "Maximum PDU length this archive receives, in bytes (0 means unlimited). "
        "Larger PDUs mean fewer round trips for big multi-frame runs.",
        minimum=0, maximum=2**32 - 1)
    acse_timeout: float = setting(
        30.0, "Seconds to wait for association negotiation messages. Also a fixed deadline "
        "from the TCP accept: a peer whose A-ASSOCIATE-RQ has not fully arrived by then is "
        "disconnected and logged, however slowly its bytes trickle in.", minimum=1)
    dimse_timeout: float = setting(
        60.0, "Seconds to wait for a DIMSE message from the peer.", minimum=1)
    network_timeout: float = setting(
        120.0, "Seconds an association may stay idle before it is aborted. Also the time a "
        "PDU may take to arrive once its first byte came, so a peer stalling mid-PDU is "
        "aborted too.", minimum=1)
    connection_timeout: float = setting(
        10.0, "Seconds to wait for a TCP connection when this archive is the client.", minimum=1)
    dicom_extra_transfer_syntaxes: str = setting(
        "", "Comma-separated transfer syntax UIDs accepted besides the standard ones (a "
        "vendor's private syntax, for example). A presentation context that proposes none of "
        "the standard syntaxes and none of these is rejected (result 4), so nothing is stored "
        "that no reader can decode.")

    # --- HL7 listener (orders from a RIS or HIS; hl7v2/) ----------------------
    hl7_port: int = setting(
        0, "HL7 v2 port (MLLP) on which the DICOM daemon takes orders (ORM^O01: new, change, "
        "cancel) from a RIS or HIS into the modality worklist, answering each with an ACK. "
        "0 (the default): no HL7 listener. 2575 is the port IANA registered for HL7 over MLLP. "
        "See docs/workflow.md.", minimum=0, maximum=65535)
    hl7_host: str = setting(
        "", "Address the HL7 listener binds to. Empty: the same as dicom_host.")
    hl7_allowed_hosts: str = setting(
        "127.0.0.1,::1", "Comma-separated IP addresses or networks (CIDR, e.g. 10.1.2.0/24) that "
        "may connect to hl7_port; a connection from any other address is closed unanswered, "
        "logged and audited. The default admits this machine only (an interface engine on the "
        "same host): name the RIS or HIS interface engine's address.")
    hl7_allowed_senders: str = setting(
        "", "Comma-separated APPLICATION^FACILITY pairs (MSH-3 sending application and MSH-4 "
        "sending facility, first component each; * matches any) whose messages are taken; a "
        "message from any other sender is answered AR and audited. Empty: any sender on an "
        "address of hl7_allowed_hosts.")
    hl7_institution: str = setting(
        "", "Code of the institution that orders received over HL7 belong to when the sending "
        "facility (MSH-4) matches no Institution Name on Administration > Institutions. "
        "Empty: the default institution.")
    hl7_max_kb: int = setting(
        256, "Largest HL7 message taken, in KiB (an order is a few KiB). A larger one is answered "
        "AR, logged, and the connection closed.", minimum=1, maximum=65536)
    hl7_timeout: float = setting(
        30.0, "Seconds an HL7 message may take to arrive once its first byte came; past it the "
        "connection is closed and logged, however slowly its bytes trickle in.", minimum=1)
    hl7_idle_timeout: float = setting(
        600.0, "Seconds an HL7 connection may stay idle between messages before it is closed "
        "(an interface engine keeps one connection open and opens another when it is closed).",
        minimum=1)

    # --- web server --------------------------------------------------------
    web_host: str = setting(
        "127.0.0.1", "Address the web server (UI and DICOMweb) binds to. The default answers "
        "this machine only (or a reverse proxy on it); 0.0.0.0 listens on every interface, for "
        "browsers elsewhere on the network. The DSM install wizard asks which one.")
    web_port: int = setting(
        8080, "Web port for the UI and DICOMweb.", minimum=0, maximum=65535)
    ups_ws_port: int = setting(
        0, "Port of the UPS-RS event channel: a WebSocket listener in the web process at "
        "/ws/subscribers/{AETitle} that sends the reading workitems' event reports to the AE "
        "titles subscribed to them (POST /dicom-web/workitems/{uid}/subscribers/{AETitle}). On "
        "web_host, with TLS (wss) when web_tls is on; clients authenticate with an API token "
        "(Authorization: Bearer). 0 (the default): no channel, and subscribing is refused. See "
        "docs/dicomweb.md.", minimum=0, maximum=65535)
    web_threads: int = setting(
        8, "Worker threads of the web server: requests served at the same time (rendering, "
        "DICOMweb transfers). More threads use more memory.", minimum=1, maximum=64)
    web_proxy_port: int = setting(
        0, "The HTTPS port of DSM's reverse proxy rule that serves the web UI with the NAS's "
        "certificate (Control Panel > Login Portal > Advanced > Reverse Proxy; the install "
        "wizard's \"only DSM's reverse proxy\" sets it). The DSM desktop icon then opens "
        "https://<NAS>:<this port>/ instead of the web port. 0: the icon opens web_port "
        "(over https when web_tls).", minimum=0, maximum=65535)
    web_tls: bool = setting(
        False, "Serve the UI and DICOMweb over HTTPS on web_port, with the certificate and key in "
        "<data_dir>/tls/server.pem and server.key (`dsmpacs tls init` creates them). TLS 1.2 or "
        "newer; plain HTTP on that port is refused. Off: plain HTTP, for use behind a reverse "
        "proxy that terminates HTTPS (DSM's, see docs/security.md) or on a closed network.")
    web_timeout: float = setting(
        30.0, "Seconds the web server waits for a client that has gone quiet (each read or write) "
        "and the longest time a request's TLS handshake, request line and headers may take in "
        "total, so a client trickling bytes holds a worker thread for this long at most. Also "
        "how long an idle keep-alive connection stays open.", minimum=1, maximum=3600)
    web_trusted_proxy: str = setting(
        "", "Address of a reverse proxy in front of the web server (for example 127.0.0.1 "
        "for DSM's own reverse proxy). Its X-Forwarded-For and X-Forwarded-Proto headers are "
        "then believed for the client address (rate limits, audit trail) and the scheme. "
        "Empty: no proxy is trusted and those headers are ignored.")
    web_secure_cookies: bool = setting(
        False, "Always mark the session and language cookies Secure, so browsers send them over "
        "HTTPS only. They are marked Secure anyway when a request arrives over HTTPS (directly, "
        "or through web_trusted_proxy with X-Forwarded-Proto); turn this on when the UI is only "
        "reached through HTTPS. Leave it off for plain HTTP or logins will not stick.")
    web_session_hours: float = setting(
        12.0, "A login lasts this many hours at most (absolute lifetime of a server-side "
        "session), however active; the session cookie also ends when the browser is closed.",
        minimum=0.1, maximum=720)
    web_idle_minutes: float = setting(
        30.0, "A web session unused for this many minutes ends (automatic logoff); the user "
        "signs in again.", minimum=0.02, maximum=1440)
    web_reauth_minutes: float = setting(
        5.0, "After a user confirms their identity again (password or TOTP code) before a "
        "dangerous action (deleting a study, user, role or token changes), further such actions "
        "need no new confirmation for this many minutes.", minimum=0.01, maximum=60)
    web_cors_origins: str = setting(
        "", "Comma-separated origins (scheme://host[:port], for example https://ohif.example.org) "
        "whose pages may call DICOMweb (/dicom-web and /wado) from the browser: an OHIF viewer or a "
        "portal hosted elsewhere. Their preflight requests are answered without credentials and "
        "their responses carry Access-Control-Allow-Origin; the requests themselves still need a "
        "user's Basic password or bearer token (cookies are never accepted cross-origin). "
        "Empty: no other origin is allowed. '*' is refused. See docs/dicomweb.md.")
    require_totp_roles: str = setting(
        "admin,auditor", "Comma-separated roles whose users must sign in with a TOTP code as well as "
        "their password. A user of such a role without TOTP is sent to enrolment right after "
        "the password and can do nothing else until enrolled. Empty: TOTP stays optional.")
    login_limit_per_user: int = setting(
        5, "Failed logins for one user name from one client address before back-off starts: "
        "each further failure doubles the wait (from 4 seconds up to login_backoff_max) before "
        "that name may be tried again from that address (HTTP 429). Other addresses are not "
        "affected, so nobody can lock an account out from elsewhere.",
        minimum=1, maximum=10000)
    login_limit_per_address: int = setting(
        30, "Failed logins from one client address, whatever the user name, before back-off "
        "starts for that address.", minimum=1, maximum=100000)
    login_limit_window: int = setting(
        900, "Seconds without a failure after which a name and address, or an address, start "
        "afresh.", minimum=10, maximum=86400)
    login_backoff_max: int = setting(
        900, "Longest wait, in seconds, that login back-off imposes.", minimum=1, maximum=86400)
    login_alert_per_minute: int = setting(
        30, "More failed logins than this within one minute, over all names and addresses, "
        "raise a security alert on the admin pages and in the audit trail.",
        minimum=1, maximum=100000)
    stow_max_mb: int = setting(
        1000, "Largest STOW-RS upload (one request body), in MiB; a larger one is refused with "
        "HTTP 413 and nothing of it is stored. Each part is staged in the storage's .tmp/ "
        "directory as it arrives (only after the caller was authenticated and may store), so "
        "the storage needs this much free space besides.",
        minimum=1, maximum=16384)
    stow_max_parts: int = setting(
        10000, "Most instances (multipart parts) in one STOW-RS request; a request with more is "
        "refused with HTTP 413 as soon as the next part starts, and nothing of it is stored. "
        "10000 holds a large thin-slice CT or multi-phase study in one request; every part costs "
        "a file, an fsync and an index transaction before the one answer goes out, so clients "
        "with more send several requests.", minimum=1, maximum=1000000)
    viewer_volume_cache_mb: int = setting(
        1024, "Memory, in MiB, the web process keeps for 3D volumes (MPR and MIP in the viewer): "
        "each series opened in 3D is read once into memory and kept until volumes opened since "
        "need the room (least recently used first). A volume larger than this alone is refused "
        "with HTTP 413; a 512x512 CT slice takes 0.5 MiB, a 300-slice rotational volume 150 MiB.",
        minimum=16, maximum=65536)
    ohif_dir: Path | None = setting(
        None, "Directory holding an OHIF Viewer 3 build (the dist/ directory of the @ohif/app npm "
        "package, unmodified; `dsmpacs ohif fetch --dir DIR` downloads the pinned version there). "
        "Set: signed-in users open OHIF at /ohif/ on this web server, reading this archive's "
        "/dicom-web with their session (same origin: no CORS, same roles and audit trail). "
        "Empty: /ohif/ does not exist. See docs/viewer.md.")

    reading_grace_hours: int = setting(
        72, "Hours a reader keeps the studies of a reading assignment (the study and the "
        "priors granted with it) after its report is signed final: time to answer the "
        "referring physician's questions or amend, after which the grants expire and a "
        "reader outside the study's institution no longer sees it.", minimum=0, maximum=8760)

    overdue_check_seconds: float = setting(
        60.0, "How often the web process looks for reading tasks past their due time and "
        "tells each assignee once (an 'overdue' notification, and e-mail when configured). "
        "The check runs in a background thread whether or not anyone has the web UI open.",
        minimum=0.2, maximum=86400)

    # --- ingest ------------------------------------------------------------
    duplicate_policy: str = setting(
        "keep-first",
        "What happens when an instance arrives whose SOP Instance UID is already stored with "
        "different content. keep-first keeps the stored copy and puts the new one in "
        "quarantine; overwrite replaces the stored copy. An identical resend is always "
        "answered with success and stores nothing new.",
        choices=("keep-first", "overwrite"))
    max_inflated_mb: int = setting(
        1024, "Largest size, in MiB, a Deflated Explicit VR Little Endian dataset may inflate "
        "to. Deflated data is inflated as a stream (on receipt, to check it, and to render "
        "it), so memory stays small whatever this says; the bound caps the work one dataset "
        "can cause. Twice the largest uncompressed DSA run (about 500 MiB), while a 1 MB "
        "deflate bomb costs at most this much inflating. A dataset inflating to more is "
        "refused with 0xC000 (STOW-RS: failure reason 0xC000), and not rendered.",
        minimum=1, maximum=65536)
    zip_max_mb: int = setting(
        65536, "Largest total uncompressed size, in MiB, of the entries of one ZIP file given "
        "to dsmpacs import; a larger ZIP (a zip bomb declares terabytes) is refused whole with "
        "its reason, and the other paths are imported.", minimum=1)
    zip_max_entries: int = setting(
        100000, "Most entries one ZIP file given to dsmpacs import may hold; a ZIP with more "
        "is refused whole.", minimum=1)
    index_timeout: float = setting(
        20.0, "Longest time, in seconds, one store (C-STORE, STOW-RS, import) waits for the "
        "index database while another connection holds a lock on it (a backup, a long "
        "maintenance job), retries included. It then fails with 0xA701 (HTTP 503 over "
        "STOW-RS) and leaves nothing behind. At most half of dimse_timeout is used, so a "
        "sender has its answer before it gives up waiting.", minimum=0.5)
    min_free_mb: int = setting(
        512, "Free space, in MiB, that must remain on the storage filesystem; an instance "
        "that would go below it is refused with 0xA700.", minimum=0)

    storage_warn_mb: int = setting(
        10240, "Free space, in MiB, below which the administration pages, DSM's package log "
        "and notify_command warn that the storage filesystem is filling up (while instances "
        "are still accepted: they are refused below min_free_mb). 0: warn only below "
        "min_free_mb.", minimum=0)

    # --- keeping running and telling ----------------------------------------
    watchdog_max_crashes: int = setting(
        5, "`dsmpacs serve` restarts a DICOM or web process that dies, after 1 s, then 2, 4 "
        "... up to 60 s while it keeps dying; after this many crashes within "
        "watchdog_window_minutes it stops restarting, stops the archive and exits non-zero, "
        "so that DSM (or another service manager) shows it stopped. Each crash is logged and "
        "shown on the administration pages.", minimum=1, maximum=1000)
    watchdog_window_minutes: float = setting(
        10.0, "The time window, in minutes, within which watchdog_max_crashes crashes of one "
        "process end the restarting (the watchdog gives up).", minimum=0.1)
    cert_warn_days: int = setting(
        30, "Warn (administration pages, DSM's package log, notify_command) when the TLS server "
        "certificate used by DICOM TLS or HTTPS expires within this many days.",
        minimum=0, maximum=3650)
    notify_command: str = setting(
        "", "Program (with its first arguments, split like a shell command line) run with two "
        "more arguments, a title and a message, for each new system notice: a crashed "
        "service, storage below storage_warn_mb, failed verification, an expiring "
        "certificate. For example a script that mails or pages someone. Every notice is also "
        "appended to <data_dir>/logs/notices.log whatever this says. Empty: none.")

    # --- integrity ----------------------------------------------------------
    verify_period_days: float = setting(
        30.0, "The DICOM daemon re-hashes every stored file in the background at least this "
        "often, in days. A file that no longer matches the size and SHA-256 recorded when it "
        "was stored (or is missing) marks its instance corrupt: it is never served again, and "
        "the administration pages raise an alert until a good copy is restored. Progress is kept "
        "in the index, so a restart continues where it stopped. 0 turns the job off "
        "(`dsmpacs verify` and storage commitment still re-hash).", minimum=0)
    verify_mb_per_s: float = setting(
        10.0, "Most MiB per second the background verification reads, so that it never competes "
        "with ingest and retrieval for the disk. 0 means unthrottled.", minimum=0)

    # --- query (C-FIND, QIDO-RS) -------------------------------------------
    pn_case_insensitive: bool = setting(
        True, "Person names (PatientName, ReferringPhysicianName...) match case-insensitively "
        "and after Unicode NFKC normalisation, and a pattern without '=' matches the "
        "alphabetic, ideographic or phonetic group. false: literal, case-sensitive matching "
        "on the whole stored value.")
    query_limit: int = setting(
        1000, "Most matches one C-FIND or one QIDO-RS response returns. A C-FIND with more "
        "matches returns the first query_limit and ends with 0xA700 (Out of resources) asking "
        "for a narrower query; QIDO-RS returns a page of query_limit with a Warning header, and "
        "the client asks for more with offset. 0 means unlimited.", minimum=0)

    # --- access policy -----------------------------------------------------
    unknown_ae_may_store: bool = setting(
        False, "Calling AEs that are not registered may send C-STORE (anyone may C-ECHO). Off by "
        "default: register each modality with `dsmpacs ae add` (or the DSM install wizard, or "
        "the Remote AEs page), or its C-STORE is refused (0x0124, not authorized) and audited as access-denied. "
        "Only registered AEs may ever query (C-FIND) or retrieve (C-MOVE, C-GET), whatever this "
        "says.")
    strict_ae_check: bool = setting(
        False, "Reject associations from calling AE titles that are not registered, at "
        "association time.")
    check_called_ae: bool = setting(
        False, "Reject associations whose called AE title is not this archive's ae_title.")
    check_peer_host: bool = setting(
        False, "A registered AE title is trusted only when the association comes from the host "
        "registered for it (guards against a spoofed AE title).")

    # --- audit trail -------------------------------------------------------
    audit_key_file: Path | None = setting(
        None, "File holding the secret keys that chain the audit records (HMAC-SHA-256); it "
        "is created with mode 0600 on first use and must never be kept in the index, or "
        "whoever can edit the index could re-sign edited records. Keep a copy with the "
        "backups of the data directory, apart from index backups. Default: "
        "<data_dir>/audit.key.")
    audit_retention_days: int = setting(
        0, "Audit records older than this many days are deleted by the daily housekeeping of "
        "the DICOM daemon and by `dsmpacs audit prune`; the pruning itself is recorded, with "
        "the chain position it continues from, so the rest still verifies. 0 keeps records "
        "forever.", minimum=0, maximum=36500)
    audit_page_verify_rows: int = setting(
        5000, "Records the audit page verifies when it is shown: all of them when the trail is "
        "this short, otherwise only those added since the last full verification (`dsmpacs "
        "audit verify`, or the daemon's daily run), so the page stays fast.",
        minimum=100, maximum=10_000_000)

    audit_syslog_host: str = setting(
        "", "Syslog collector that receives a copy of every audit record (RFC 5424 over TLS, "
        "RFC 5425 framing), sent by the DICOM daemon in order. Records written while the "
        "collector is unreachable are sent when it is back; pruning keeps records not yet "
        "sent. Empty: no export.")
    audit_syslog_port: int = setting(
        6514, "TCP port of the syslog collector (6514 is syslog over TLS).", minimum=1, maximum=65535)
    audit_syslog_ca_file: Path | None = setting(
        None, "CA certificate (PEM) that signed the syslog collector's certificate. Default: "
        "the system's trusted CAs. The collector's name must match audit_syslog_host.")

    # --- notifications by e-mail (archive/mailer.py) -------------------------
    smtp_host: str = setting(
        "", "SMTP server that sends users their notifications by e-mail (to the address each "
        "user gives on the notifications page). Empty: notifications stay in the web UI only.")
    smtp_port: int = setting(587, "TCP port of the SMTP server (587 submission, 25 relay).",
                             minimum=1, maximum=65535)
    smtp_user: str = setting("", "User name for SMTP authentication. Empty: no authentication.")
    smtp_password: str = setting("", "Password for SMTP authentication.", secret=True)
    smtp_from: str = setting("", "Sender address of notification e-mails, e.g. pacs@hospital.example.")
    smtp_starttls: bool = setting(
        True, "Upgrade the SMTP connection with STARTTLS (certificate checked against the system's "
        "trusted CAs) before authenticating or sending. false only for a relay on this machine.")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if meta["choices"] and value not in meta["choices"]:
                raise SettingsError(f"{f.name} must be one of {', '.join(meta['choices'])}, "
                                    f"not {value!r}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if meta["minimum"] is not None and value < meta["minimum"]:
                    raise SettingsError(f"{f.name} must be at least {meta['minimum']}, not {value}")
                if meta["maximum"] is not None and value > meta["maximum"]:
                    raise SettingsError(f"{f.name} must be at most {meta['maximum']}, not {value}")
        if not valid_ae_title(self.ae_title):
            raise SettingsError(f"ae_title {self.ae_title!r} is not a valid AE title "
                                "(1-16 printable ASCII characters, no backslash)")
        if self.database_url and not self.database_url.startswith(("sqlite:", "mysql:")):
            raise SettingsError("database_url must start with sqlite:// or mysql://")
        self.cors_origins  # raises SettingsError for a malformed origin
        self.hl7_networks  # raises SettingsError for a malformed address
        self.hl7_senders
        if not self.dicom_plain and not self.dicom_tls_port:
            raise SettingsError("dicom_plain is false but dicom_tls_port is 0: the archive would "
                                "not listen for DICOM at all; set dicom_tls_port (2762 is DICOM "
                                "over TLS) or dicom_plain = true")

    # --- derived values ----------------------------------------------------
    @property
    def cors_origins(self) -> frozenset[str]:
        """web_cors_origins as browsers serialise an Origin header: lower-case scheme and
        host, no default port, no path."""
        origins = set()
        for raw in self.web_cors_origins.split(","):
            raw = raw.strip()
            if raw:
                origins.add(_origin(raw))
        return frozenset(origins)

    @property
    def hl7_networks(self) -> tuple:
        """hl7_allowed_hosts as ipaddress networks (a bare address is a /32 or /128)."""
        import ipaddress

        networks = []
        for raw in self.hl7_allowed_hosts.split(","):
            raw = raw.strip()
            if raw:
                try:
                    networks.append(ipaddress.ip_network(raw, strict=False))
                except ValueError:
                    raise SettingsError(f"hl7_allowed_hosts: {raw!r} is not an IP address or "
                                        "network") from None
        return tuple(networks)

    @property
    def hl7_senders(self) -> frozenset[tuple[str, str]]:
        """hl7_allowed_senders as (application, facility) pairs, upper-cased."""
        pairs = set()
        for raw in self.hl7_allowed_senders.split(","):
            raw = raw.strip()
            if raw:
                app, sep, facility = raw.partition("^")
                if not sep or not app.strip() or not facility.strip():
                    raise SettingsError(f"hl7_allowed_senders: {raw!r} is not APPLICATION^FACILITY "
                                        "(* matches any)")
                pairs.add((app.strip().upper(), facility.strip().upper()))
        return frozenset(pairs)

    @property
    def effective_storage_root(self) -> Path:
        return self.storage_root or self.data_dir / "storage"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'index.sqlite3').absolute()}"

    @property
    def effective_audit_key_file(self) -> Path:
        return self.audit_key_file or self.data_dir / "audit.key"

    @property
    def effective_index_timeout(self) -> float:
        return min(self.index_timeout, self.dimse_timeout / 2)

    @property
    def effective_log_file(self) -> Path:
        return self.log_file or self.data_dir / "logs" / "dsmpacs.log"

    # --- loading -----------------------------------------------------------
    @classmethod
    def load(cls, *, data_dir: str | Path | None = None, env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> "Settings":
        """Build Settings from the layers. ``overrides`` are CLI flags (None values ignored)."""
        env = os.environ if env is None else env
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        known = {f.name: f for f in fields(cls)}
        for name in overrides:
            if name not in known:
                raise SettingsError(f"unknown setting {name!r}")

        env_values = {}
        for key, raw in env.items():
            if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
                name = key[len(ENV_PREFIX):].lower()
                if name not in known:
                    raise SettingsError(f"unknown setting in environment: {key}")
                env_values[name] = raw

        chosen_dir = overrides.get("data_dir", env_values.get("data_dir", cls.data_dir))
        file_values = _read_config(Path(chosen_dir) / CONFIG_FILE, known)

        values: dict[str, Any] = {}
        for layer, source in ((file_values, "config.toml"), (env_values, "environment"),
                              (overrides, "command line")):
            for name, raw in layer.items():
                values[name] = _coerce(known[name], raw, source)
        return cls(**values)

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **changes)

    def as_values(self) -> dict[str, Any]:
        """Every setting as JSON takes it (paths as text): what the DICOM daemon sends
        its receiving processes (dicom/handover.py); ``from_values`` reads it back."""
        return {f.name: str(value) if isinstance(value, Path) else value
                for f in fields(self) for value in [getattr(self, f.name)]}

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "Settings":
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**{name: None if raw is None else _coerce(known[name], raw, "the DICOM daemon")
                      for name, raw in values.items()})

    # --- presentation ------------------------------------------------------
    def redacted(self) -> dict[str, str]:
        """Effective values as strings, secrets hidden; what `dsmpacs settings` prints."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "storage_root":
                value = self.effective_storage_root
            elif f.name == "database_url":
                value = redact_url(self.effective_database_url)
            elif f.name == "log_file":
                value = self.effective_log_file
            elif f.metadata["secret"]:
                value = REDACTED if value else ""
            out[f.name] = "" if value is None else str(value)
        return out


def redact_url(url: str) -> str:
    """Hide the password in a database URL."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{netloc[1]}"))


def _read_config(path: Path, known: Mapping[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    for name in data:
        if name not in known:
            raise SettingsError(f"{path}: unknown setting {name!r}")
    return data


def _base_type(f) -> type:
    hint = typing.get_type_hints(Settings)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _coerce(f, raw: Any, source: str) -> Any:
    kind = _base_type(f)
    try:
        if raw == "" and f.default is None:
            return None
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(os.path.expanduser(str(raw)))
        return str(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{f.name} from {source}: {raw!r} is not a valid "
                            f"{kind.__name__}") from None


def settings_markdown() -> str:
    """The settings reference, generated from the field metadata."""
    lines = [
        "# Settings reference",
        "",
        "Generated by `dsmpacs settings --markdown`; a test keeps this file equal to the code.",
        "",
        "Each setting is read, lowest precedence first, from its default, from `config.toml` "
        "in the data directory (`name = value`), from the environment variable "
        f"`{ENV_PREFIX}NAME` (upper case), and from `--set name=value` or a dedicated flag on "
        "the command line. `dsmpacs settings` prints the effective values with secrets hidden.",
        "",
        "| Setting | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for f in fields(Settings):
        kind = _base_type(f).__name__.replace("PosixPath", "Path")
        default = "(derived)" if f.default is None else f"`{f.default}`"
        doc = f.metadata["doc"]
        if f.metadata["choices"]:
            doc += " One of: " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
        if f.metadata["secret"]:
            doc += " Secret: shown redacted."
        lines.append(f"| `{f.name}` | {kind} | {default} | {doc} |")
    return "\n".join(lines) + "\n"


def _origin(raw: str) -> str:
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or \
            parts.path not in ("", "/") or parts.query or parts.fragment or parts.username \
            or parts.password:
        raise SettingsError(f"web_cors_origins: {raw!r} is not an origin like https://host[:port]")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")
