"""Index tables (peewee). SQLite in WAL mode by default, MariaDB by URL.

The DICOM attribute columns of the four levels are generated from
``attributes.ATTRIBUTES``, so the list of matchable attributes, the extraction
and the schema cannot disagree. What is declared by hand below is what the
archive adds: keys, search forms, counters and file bookkeeping.

Text columns use a binary collation on MariaDB (set when the tables are
created), so that comparisons and index ranges behave exactly as in SQLite and
in Python. Case-insensitive person-name matching uses the normalised
``*_alpha/_ideo/_phon`` columns instead of a collation.
"""
from __future__ import annotations

from datetime import datetime, timezone

from peewee import (
    SQL,
    BigIntegerField,
    BooleanField,
    CharField,
    DatabaseProxy,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from dsmpacs.archive.attributes import INTEGER_VRS, NAME_SEARCH, Level, attributes_at

database_proxy = DatabaseProxy()


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


# patient_name: literal matching when pn_case_insensitive is off (the default
# matches the indexed *_alpha/_ideo/_phon search forms instead).
_INDEXED = {"patient_id", "patient_name", "patient_birth_date", "study_date", "accession_number",
            "modality", "sop_class_uid"}
_UNIQUE = {"study_instance_uid", "series_instance_uid", "sop_instance_uid"}


def _attribute_fields(level: Level) -> dict[str, object]:
    out: dict[str, object] = {}
    for attr in attributes_at(level):
        if attr.vr in INTEGER_VRS:
            out[attr.column] = IntegerField(default=0 if attr.derived else None, null=not attr.derived)
        elif attr.vr in ("LT", "ST", "UT"):
            out[attr.column] = TextField(default="")
        else:
            out[attr.column] = CharField(max_length=attr.max_length, default="",
                                         index=attr.column in _INDEXED,
                                         unique=attr.column in _UNIQUE)
    return out


def _name_search_fields(column: str) -> dict[str, object]:
    # Normalised component groups of a PN; each indexed so prefix patterns use it.
    return {f"{column}_{group}": CharField(max_length=128, default="", index=True)
            for group in ("alpha", "ideo", "phon")}


def _model(name: str, level: Level, extra: dict[str, object], doc: str) -> type[BaseModel]:
    namespace = {"__module__": __name__, "__doc__": doc, **_attribute_fields(level), **extra}
    return type(name, (BaseModel,), namespace)


def _name_columns(level: Level) -> dict[str, object]:
    return {k: v for column, at in NAME_SEARCH.items() if at is level
            for k, v in _name_search_fields(column).items()}


def pinyin_columns() -> dict[str, object]:
    """The pinyin of a Chinese patient name and its initials (archive/names), for the
    study list's search. The database default lets the migration add it without
    rebuilding the table."""
    return {"patient_name_pinyin": CharField(max_length=128, default="", index=True,
                                             constraints=[SQL("DEFAULT ''")]),
            "patient_name_initials": CharField(max_length=32, default="", index=True,
                                               constraints=[SQL("DEFAULT ''")])}


# The institution every archive has from its first start (or its upgrade): it holds
# whatever no binding or alias places elsewhere, so a single-room archive behaves as
# before institutions existed (archive/visibility.py).
DEFAULT_INSTITUTION_ID = 1


def institution_column() -> dict[str, object]:
    """Which institution a study (or an order) belongs to: ``institution.id``. An
    indexed integer with a database default rather than a declared foreign key, so the
    migration adds it to a large study table without rebuilding it (SQLite cannot add a
    REFERENCES column with a non-null default while foreign keys are enforced)."""
    return {"institution": IntegerField(default=DEFAULT_INSTITUTION_ID, index=True,
                                        constraints=[SQL(f"DEFAULT {DEFAULT_INSTITUTION_ID}")])}


Patient = _model("Patient", Level.PATIENT, {
    # PatientID + issuer identify a patient; without an ID, name and birth date do.
    "patient_key": CharField(max_length=64, unique=True),
    **_name_columns(Level.PATIENT),
    **pinyin_columns(),
    "specific_character_set": CharField(max_length=64, default=""),
    "created_at": DateTimeField(default=utcnow),
}, "One row per patient identity (PatientID and issuer).")

Study = _model("Study", Level.STUDY, {
    "patient": ForeignKeyField(Patient, backref="studies", on_delete="CASCADE"),
    **_name_columns(Level.STUDY),
    "specific_character_set": CharField(max_length=64, default=""),
    "created_at": DateTimeField(default=utcnow),
    "updated_at": DateTimeField(default=utcnow, index=True),
    **institution_column(),
}, "One row per StudyInstanceUID, with its series and instance counts.")

Series = _model("Series", Level.SERIES, {
    "study": ForeignKeyField(Study, backref="series", on_delete="CASCADE"),
    "specific_character_set": CharField(max_length=64, default=""),
    "created_at": DateTimeField(default=utcnow),
    "updated_at": DateTimeField(default=utcnow),
}, "One row per SeriesInstanceUID.")

def integrity_columns() -> dict[str, object]:
    """What re-hashing found (archive/integrity.py). The database-side defaults let the
    ingest's prepared INSERT leave these columns out, and let the migration add them
    without rebuilding the table."""
    return {
        # The file no longer matches its size and SHA-256, or is missing: never served.
        "corrupt": BooleanField(default=False, index=True, constraints=[SQL("DEFAULT 0")]),
        "corrupt_reason": CharField(max_length=255, default="", constraints=[SQL("DEFAULT ''")]),
        # Last time the whole file was re-hashed (its outcome is ``corrupt``);
        # NULL: not since it was received.
        "verified_at": DateTimeField(null=True),
    }


INTEGRITY_COLUMNS = integrity_columns()

Instance = _model("Instance", Level.IMAGE, {
    "series": ForeignKeyField(Series, backref="instances", on_delete="CASCADE"),
    "transfer_syntax_uid": CharField(max_length=64),
    "specific_character_set": CharField(max_length=64, default=""),
    "path": CharField(max_length=255, unique=True),     # relative to the storage root
    "size": BigIntegerField(),
    "sha256": CharField(max_length=64),                  # of the whole stored file
    "dataset_offset": IntegerField(),                    # where the dataset bytes start
    "received_at": DateTimeField(default=utcnow, index=True),
    "calling_ae": CharField(max_length=16, default=""),
    "origin": CharField(max_length=16, default=""),      # dicom, stow, import, reindex, derived
    **INTEGRITY_COLUMNS,
}, "One row per stored SOP instance and its file.")


class Quarantine(BaseModel):
    """A copy that was kept but not archived: a different payload under a stored UID,
    or a file found after a crash without its index row."""
    sop_instance_uid = CharField(max_length=64, index=True)
    sop_class_uid = CharField(max_length=64, default="")
    path = CharField(max_length=255, unique=True)
    reason = CharField(max_length=255)
    size = BigIntegerField(default=0)
    sha256 = CharField(max_length=64, default="")
    calling_ae = CharField(max_length=16, default="")
    origin = CharField(max_length=16, default="")
    received_at = DateTimeField(default=utcnow, index=True)


class RemoteAE(BaseModel):
    """A registered DICOM peer: the angiography system, the 3D workstation, another PACS."""
    name = CharField(max_length=64, unique=True)
    ae_title = CharField(max_length=16, index=True)
    host = CharField(max_length=255)
    port = IntegerField()
    may_store = BooleanField(default=True)             # may send us C-STORE
    may_find = BooleanField(default=True)              # may query us (C-FIND)
    may_retrieve = BooleanField(default=True)          # may C-MOVE / C-GET from us
    is_move_destination = BooleanField(default=True)   # we may send to it (C-MOVE target, push)
    tls = BooleanField(default=False)                  # DICOM TLS both ways; refused on the plain port
    tls_client_cert = BooleanField(default=False)      # must show a client certificate on the TLS port
    # Bound to an institution: stores land there, queries and retrieves see only it
    # (archive/visibility.py). NULL: unbound, sees everything (as before institutions).
    institution = IntegerField(null=True)
    description = CharField(max_length=255, default="")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class User(BaseModel):
    """A person who signs in to the web UI or DICOMweb (see archive/users.py)."""
    username = CharField(max_length=64)
    username_key = CharField(max_length=64, unique=True)   # NFKC casefolded: one account per name
    password_hash = CharField(max_length=255)
    role = CharField(max_length=16)                       # admin, radiologist, viewer, auditor
    disabled = BooleanField(default=False)
    # Bumped when the password or role changes or the account is disabled: every session
    # and cached credential carrying an older epoch stops working.
    epoch = IntegerField(default=1)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(null=True)


class ApiToken(BaseModel):
    """A bearer token for API clients; only its SHA-256 is stored."""
    user = ForeignKeyField(User, backref="tokens", on_delete="CASCADE")
    label = CharField(max_length=64, default="")
    token_hash = CharField(max_length=64, unique=True)
    prefix = CharField(max_length=12)                     # shown so a token can be recognised
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)


class AuditEvent(BaseModel):
    """Who did what, when, from where: views, searches, exports, deletions, logins,
    refusals, admin changes. The actor is kept by name, so the trail outlives a removed
    account. Each record is chained to the one before by ``mac``, an HMAC under a key
    kept outside the index (archive/auditchain.py); ``seq`` numbers the chain without
    gaps, and its unique key is what serialises concurrent appends."""
    seq = BigIntegerField(unique=True)
    at = DateTimeField(default=utcnow, index=True)
    actor = CharField(max_length=64, index=True)
    role = CharField(max_length=16, default="")
    action = CharField(max_length=32, index=True)
    event = CharField(max_length=64, default="")          # IHE ATNA / PS3.15 A.5 event name
    outcome = CharField(max_length=16, default="ok")
    study_instance_uid = CharField(max_length=64, default="", index=True)
    patient_id = CharField(max_length=64, default="", index=True)
    patient_name = CharField(max_length=128, default="")
    calling_ae = CharField(max_length=16, default="")
    called_ae = CharField(max_length=16, default="")
    detail = CharField(max_length=1024, default="")
    address = CharField(max_length=64, default="")
    key_id = CharField(max_length=16, default="")        # which chain key signed it; "" before the chain
    mac = CharField(max_length=64, default="")


class WebSession(BaseModel):
    """A signed-in browser (see archive/sessions.py). Only the SHA-256 of the cookie's
    random id is kept, so a copy of the index lets nobody take over a session."""
    token_hash = CharField(max_length=64, unique=True)
    user = ForeignKeyField(User, backref="web_sessions", on_delete="CASCADE")
    epoch = IntegerField()                                # the account's epoch at sign-in
    stage = CharField(max_length=8, default="ok")        # ok, totp (code due), enrol (must enrol)
    created_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(index=True)               # absolute end (web_session_hours)
    reauth_until = DateTimeField(null=True)              # identity confirmed again until then
    address = CharField(max_length=64, default="")
    user_agent = CharField(max_length=255, default="")


class TotpCredential(BaseModel):
    """A user's TOTP secret (archive/totp.py); unconfirmed until a first code matched."""
    user = ForeignKeyField(User, unique=True, backref="totp", on_delete="CASCADE")
    secret = CharField(max_length=64)
    confirmed_at = DateTimeField(null=True)
    last_step = BigIntegerField(default=0)               # newest time step used: no replay
    created_at = DateTimeField(default=utcnow)


class RecoveryCode(BaseModel):
    """A single-use code that stands in for TOTP; only its SHA-256 is stored."""
    user = ForeignKeyField(User, backref="recovery_codes", on_delete="CASCADE")
    code_hash = CharField(max_length=64, unique=True)
    used_at = DateTimeField(null=True)


class AssociationLog(BaseModel):
    """One DICOM association (incoming or outgoing), written once when it ends."""
    direction = CharField(max_length=3)                   # in, out
    calling_ae = CharField(max_length=16, default="")
    called_ae = CharField(max_length=16, default="")
    peer = CharField(max_length=128, default="")          # address:port of the other side
    started_at = DateTimeField(default=utcnow)
    ended_at = DateTimeField(default=utcnow, index=True)
    outcome = CharField(max_length=16)                    # released, aborted, rejected, failed
    services = CharField(max_length=128, default="")      # e.g. "C-ECHO C-STORE"
    completed = IntegerField(default=0)                   # instances/operations that succeeded
    warnings = IntegerField(default=0)
    failed = IntegerField(default=0)
    bytes = BigIntegerField(default=0)
    detail = CharField(max_length=255, default="")


class JobLease(BaseModel):
    """A background job's lease and saved progress. A node works on the job only while
    it holds the lease (owner, lease_until), so several nodes over one index never do
    the same work twice; the cursor lets a restarted job continue where it stopped."""
    name = CharField(max_length=32, unique=True)
    owner = CharField(max_length=128, default="")
    lease_until = DateTimeField(null=True)
    cursor = BigIntegerField(default=0)                   # e.g. the last Instance.id done
    cycle_started_at = DateTimeField(null=True)
    cycle_finished_at = DateTimeField(null=True)          # the last complete pass
    updated_at = DateTimeField(default=utcnow)


class Annotation(BaseModel):
    """One measurement or annotation a user drew on a frame (archive/annotations.py).
    Kept per user, by UIDs rather than foreign keys: a study deleted and received
    again finds its annotations back, and nothing here blocks a delete. Geometry is
    JSON in image pixel coordinates, so it is independent of zoom and screen."""
    username = CharField(max_length=64)
    study_instance_uid = CharField(max_length=64)
    series_instance_uid = CharField(max_length=64)
    sop_instance_uid = CharField(max_length=64)
    frame = IntegerField(default=0)                       # counted from 0
    kind = CharField(max_length=16)                       # length, angle, stenosis, ellipse, arrow, text, calibrate
    geometry = TextField()                                # JSON: {"points": [[x, y], ...], ...}
    label = CharField(max_length=255, default="")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        # The viewer asks per user and study.
        indexes = ((("username", "study_instance_uid"), False),)


class Order(BaseModel):
    """A registered imaging order (archive/orders.py): one requested procedure with one
    scheduled procedure step, served to modalities by the Modality Worklist SCP."""
    accession_number = CharField(max_length=16, unique=True)
    patient_id = CharField(max_length=64, index=True)
    patient_name = CharField(max_length=192, default="")          # DICOM PN form
    # Normalised component groups, as on Patient: the worklist matches names like C-FIND.
    patient_name_alpha = CharField(max_length=128, default="", index=True)
    patient_name_ideo = CharField(max_length=128, default="", index=True)
    patient_name_phon = CharField(max_length=128, default="", index=True)
    patient_birth_date = CharField(max_length=8, default="")
    patient_sex = CharField(max_length=16, default="")
    requested_procedure_id = CharField(max_length=16, default="")
    procedure_description = CharField(max_length=64, default="")
    procedure_code = CharField(max_length=16, default="")
    procedure_code_scheme = CharField(max_length=16, default="")
    scheduled_date = CharField(max_length=8, index=True)        # YYYYMMDD
    scheduled_time = CharField(max_length=6, default="")        # HHMMSS
    priority = CharField(max_length=8, default="ROUTINE")
    requesting_physician = CharField(max_length=192, default="")
    modality = CharField(max_length=16, index=True)
    station_ae_title = CharField(max_length=16, default="", index=True)
    step_id = CharField(max_length=16, default="")              # Scheduled Procedure Step ID
    study_instance_uid = CharField(max_length=64, unique=True)  # given to the modality
    state = CharField(max_length=16, default="scheduled", index=True)
    created_by = CharField(max_length=64, default="")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    # The registrar's institution; the worklist answers a bound AE only with its own.
    institution = institution_column()["institution"]

    class Meta:
        table_name = "orders"        # ORDER is an SQL keyword: raw SQL would have to quote it


class OrderArrival(BaseModel):
    """How an arrived study with an accession number met the orders: matched to its
    order, or a mismatch waiting for reconciliation (archive/reconcile.py)."""
    study_instance_uid = CharField(max_length=64, unique=True)
    accession_number = CharField(max_length=16, index=True)
    patient_id = CharField(max_length=64, default="")
    patient_name = CharField(max_length=192, default="")
    order = ForeignKeyField(Order, null=True, backref="arrivals", on_delete="SET NULL")
    outcome = CharField(max_length=16, index=True)   # matched, patient-differs, unknown-order, linked
    resolved_by = CharField(max_length=64, default="")
    resolved_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)


class PerformedStep(BaseModel):
    """A Modality Performed Procedure Step a modality reported (archive/performed.py):
    its state and the order it performs, when one matched."""
    sop_instance_uid = CharField(max_length=64, unique=True)
    order = ForeignKeyField(Order, null=True, backref="performed_steps", on_delete="SET NULL")
    accession_number = CharField(max_length=16, default="", index=True)
    status = CharField(max_length=16)                    # IN PROGRESS, COMPLETED, DISCONTINUED
    calling_ae = CharField(max_length=16, default="")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class StudyGrant(BaseModel):
    """Access to one study given to one user beyond their institutions
    (archive/grants.py): a reading assignment, the prior studies it brings for
    comparison, an administrator's share. Expires at ``expires_at`` (None: until
    revoked); revoked rows are kept for the record."""
    username = CharField(max_length=64, index=True)
    study_instance_uid = CharField(max_length=64, index=True)
    reason = CharField(max_length=16)                     # assignment, prior, manual
    source = CharField(max_length=64, default="")         # e.g. the reading task's id
    granted_by = CharField(max_length=64, default="")
    expires_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("username", "study_instance_uid"), False),)


class ReadingRule(BaseModel):
    """How an arriving study becomes a reading task (archive/reading.py): the first
    enabled rule (by position) whose institution, modality and description pattern
    match gives the assignee ('' = the pool), priority, due time and whether the
    patient's prior studies are granted with the assignment."""
    name = CharField(max_length=64)
    institution = CharField(max_length=64, default="")    # '' = any
    modality = CharField(max_length=16, default="")       # '' = any
    pattern = CharField(max_length=128, default="")       # fnmatch on the description; '' = any
    assignee = CharField(max_length=64, default="")       # '' = the pool
    priority = CharField(max_length=8, default="MEDIUM")  # HIGH, MEDIUM, LOW (UPS priorities)
    due_hours = IntegerField(default=24)
    include_priors = BooleanField(default=False)
    position = IntegerField(default=0)
    created_by = CharField(max_length=64, default="")
    created_at = DateTimeField(default=utcnow)


class ReadingTask(BaseModel):
    """One study to read (archive/reading.py), also a UPS workitem (its SOP
    Instance UID, and the Transaction UID of the performer who holds it)."""
    study_instance_uid = CharField(max_length=64, unique=True)
    ups_uid = CharField(max_length=64, unique=True)
    institution = CharField(max_length=64, default="", index=True)
    state = CharField(max_length=16, index=True)          # unread, assigned, in-progress, ...
    priority = CharField(max_length=8, default="MEDIUM")
    due_at = DateTimeField(null=True)
    assignee = CharField(max_length=64, default="", index=True)
    rule = CharField(max_length=64, default="")
    include_priors = BooleanField(default=False)
    patient_id = CharField(max_length=64, default="")
    patient_name = CharField(max_length=256, default="")
    accession_number = CharField(max_length=64, default="")
    modality = CharField(max_length=16, default="")
    description = CharField(max_length=128, default="")
    transaction_uid = CharField(max_length=64, default="")
    created_at = DateTimeField(default=utcnow)
    # Indexed: the UPS event channel (web/upsws.py) asks twice a second for the tasks
    # changed in the last seconds; without it that is a scan of every task ever read.
    updated_at = DateTimeField(default=utcnow, index=True)


class Report(BaseModel):
    """The report of one study (archive/reports.py): its state and current version.
    The versions themselves, each with its content and signature, are ReportVersion rows."""
    study_instance_uid = CharField(max_length=64, unique=True)
    state = CharField(max_length=16, index=True)          # draft, final, amended
    current_version = IntegerField(default=1)
    created_by = CharField(max_length=64, default="")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class ReportVersion(BaseModel):
    """One version of a report. A draft is edited in place; once signed it is never
    changed again (an amendment is the next version, with its reason)."""
    report = ForeignKeyField(Report, backref="versions", on_delete="CASCADE")
    version = IntegerField()
    state = CharField(max_length=16)                      # draft, final, amended
    template = CharField(max_length=32, default="")
    language = CharField(max_length=16, default="en")
    findings = TextField(default="")
    impression = TextField(default="")
    items = TextField(default="{}")                       # JSON: measurements and key images
    author = CharField(max_length=64, default="")
    signer = CharField(max_length=64, default="")
    signed_at = DateTimeField(null=True)
    content_hash = CharField(max_length=64, default="")   # SHA-256 of the canonical signed content
    amendment_reason = TextField(default="")
    sr_sop_instance_uid = CharField(max_length=64, default="")
    pdf_sop_instance_uid = CharField(max_length=64, default="")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("report", "version"), True),)


class StudyShare(BaseModel):
    """A link that opens one study read-only without an account (archive/shares.py).
    Only the SHA-256 of the link's 256-bit token is kept; the optional access code
    is scrypt-hashed like a password. Revoked and expired rows stay for the record."""
    study_instance_uid = CharField(max_length=64, index=True)
    token_hash = CharField(max_length=64, unique=True)
    code_hash = CharField(max_length=255, null=True)
    label = CharField(max_length=128, default="")
    created_by = CharField(max_length=64)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    revoked_at = DateTimeField(null=True)
    revoked_by = CharField(max_length=64, default="")
    uses = IntegerField(default=0)
    last_used_at = DateTimeField(null=True)


class ReferringName(BaseModel):
    """The DICOM person name an administrator linked to a referring physician's
    account (archive/referring.py): their patients' studies name them in
    Referring Physician's Name (0008,0090)."""
    username = CharField(max_length=64, unique=True)
    dicom_name = CharField(max_length=64)
    name_key = CharField(max_length=64, index=True)      # normalised for matching
    updated_by = CharField(max_length=64, default="")
    updated_at = DateTimeField(default=utcnow)


class Notification(BaseModel):
    """Something a user should know (archive/notifications.py): a reading assigned to
    them, a read overdue, a report amended. ``params`` is JSON for the text's
    placeholders; the web layer words it in the reader's language."""
    username = CharField(max_length=64)
    kind = CharField(max_length=32)
    study_instance_uid = CharField(max_length=64, default="")
    params = TextField(default="{}")
    dedup_key = CharField(max_length=128, null=True, unique=True)   # one overdue notice per task
    created_at = DateTimeField(default=utcnow)
    read_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("username", "read_at"), False),)


class NotifyAddress(BaseModel):
    """The e-mail address a user wants their notifications sent to (archive/mailer.py)."""
    username = CharField(max_length=64, unique=True)
    address = CharField(max_length=254)


class Institution(BaseModel):
    """A hospital or site sharing the archive (archive/visibility.py). Id 1 is the
    default institution, created with the schema or by the upgrade to it."""
    code = CharField(max_length=32, unique=True)
    name = CharField(max_length=128)
    created_at = DateTimeField(default=utcnow)


class Membership(BaseModel):
    """A user's place in an institution and their role within it."""
    user = ForeignKeyField(User, backref="memberships", on_delete="CASCADE")
    institution = ForeignKeyField(Institution, backref="memberships", on_delete="CASCADE")
    role = CharField(max_length=24)     # registrar, technologist, radiologist, referring, institution-admin
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("user", "institution"), True),)


class InstitutionAlias(BaseModel):
    """An Institution Name (0008,0080) as senders write it, mapped to an institution;
    matched case- and space-insensitively (``name_key``) when a study arrives."""
    name = CharField(max_length=128)
    name_key = CharField(max_length=128, unique=True)
    institution = ForeignKeyField(Institution, backref="aliases", on_delete="CASCADE")
    created_at = DateTimeField(default=utcnow)


class UpsSubscription(BaseModel):
    """A UPS-RS subscription (PS3.4 CC.2.3, archive/ups_subscriptions.py): an AE title's
    interest in one workitem (``ups_uid``) or in the whole worklist (the well-known
    global UID). ``subscribed`` false on a workitem row: that workitem is left out of
    the AE's global subscription (unsubscribed from it alone)."""
    ae_title = CharField(max_length=16)
    ups_uid = CharField(max_length=64)
    subscribed = BooleanField(default=True)
    deletion_lock = BooleanField(default=False)
    owner = CharField(max_length=64, default="")          # the user who subscribed (audit, display)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("ae_title", "ups_uid"), True),)


class SchemaVersion(BaseModel):
    version = IntegerField()


MODELS: tuple[type[BaseModel], ...] = (SchemaVersion, Patient, Study, Series, Instance, Quarantine,
                                        RemoteAE, User, ApiToken, AuditEvent, AssociationLog, JobLease,
                                        WebSession, TotpCredential, RecoveryCode, Annotation,
                                        Order, OrderArrival, PerformedStep, StudyGrant,
                                        Institution, Membership, InstitutionAlias,
                                        ReadingRule, ReadingTask, Report, ReportVersion,
                                        StudyShare, ReferringName, Notification, NotifyAddress,
                                        UpsSubscription)
