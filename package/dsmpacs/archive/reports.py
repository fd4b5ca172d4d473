"""Reports: a radiologist's findings and impression on a study, drafted, signed and
amended, each signed version kept with its signer, time and content hash.

One report per study, made of versions. A draft version is edited in place (the
editor saves it as the user types, so saving is idempotent: the same content
leaves the same row). Signing freezes the version: it records the signer, the
time and the SHA-256 of the canonical signed content (``canonical_content``), and
the archive makes a Basic Text SR and an Encapsulated PDF of it, stored through the
single ingest path like any derived object (archive/derived/report_sr.py,
report_pdf.py). An amendment is the next version, a draft again, carrying its
reason; the earlier versions stay as they were, readable in the history.

A version can also be issued *preliminary* (``sign(..., preliminary=True)``): it is
frozen and hashed like a signature, and the archive stores its SR only, flagged as a
preliminary, partial, unverified document (archive/derived/report_sr.py). The
referring physician sees it marked preliminary. It is not amended: editing it opens
the next version as a draft, and signing final (from that draft, or straight from
the preliminary version, whose content then becomes the next version) makes the
final report, whose SR names the preliminary one as its predecessor. Once a version
is final, only amendments follow.

Checking who may write and that the signer re-authenticated is the caller's
(the web adapter); this module knows the content, the states and the objects.
Every change of state is published as the ``report.state`` event (archive/events.py).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Report, ReportVersion, utcnow
from dsmpacs.archive.uids import is_valid_uid

DRAFT, PRELIMINARY, FINAL, AMENDED = "draft", "preliminary", "final", "amended"
SIGNED = (PRELIMINARY, FINAL, AMENDED)
LANGUAGES = ("en", "zh-Hans")
MAX_TEXT = 20_000
MAX_ITEMS = 100
MAX_REASON = 1024
TEMPLATE_DIR = Path(__file__).with_name("report_templates")
LABELS_FILE = "document-labels.json"     # headings of the PDF, in the report's language


class ReportError(ValueError):
    """A request that cannot be done as given (the message says why)."""


class ReportLocked(ReportError):
    """The current version is signed: it can only be amended."""


# --- templates -----------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    id: str
    title: dict[str, str]
    findings: dict[str, str]
    impression: dict[str, str]
    modalities: tuple[str, ...]
    order: int

    def text(self, part: str, language: str) -> str:
        values = getattr(self, part)
        return values.get(language) or values.get("en", "")

    def as_dict(self, language: str) -> dict:
        return {"id": self.id, "title": self.text("title", language), "modalities": list(self.modalities),
                "findings": self.text("findings", language), "impression": self.text("impression", language)}


@lru_cache(maxsize=1)
def templates() -> dict[str, Template]:
    """The report templates per procedure (report_templates/*.json), in their order."""
    found = []
    for path in TEMPLATE_DIR.glob("*.json"):
        if path.name == LABELS_FILE:
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        found.append(Template(data["id"], data["title"], data["findings"], data["impression"],
                              tuple(data.get("modalities", ())), int(data.get("order", 99))))
    return {t.id: t for t in sorted(found, key=lambda t: (t.order, t.id))}


@lru_cache(maxsize=1)
def document_labels() -> dict[str, dict[str, str]]:
    return json.loads((TEMPLATE_DIR / LABELS_FILE).read_text(encoding="utf-8"))


# --- content -------------------------------------------------------------------------
@dataclass
class Content:
    """What the author writes: the part of a version that the signature covers,
    with the signer's name, time and the amendment reason."""
    template: str = ""
    language: str = "en"
    findings: str = ""
    impression: str = ""
    measurements: list[dict] = field(default_factory=list)
    key_images: list[dict] = field(default_factory=list)

    @classmethod
    def parse(cls, data) -> "Content":
        """Content from the editor's JSON, or ReportError."""
        if not isinstance(data, dict):
            raise ReportError("a report is an object")
        template = data.get("template") or ""
        if template and template not in templates():
            raise ReportError(f"unknown template {template!r}")
        language = data.get("language") or "en"
        if language not in LANGUAGES:
            raise ReportError(f"unknown language {language!r}")
        texts = {}
        for name in ("findings", "impression"):
            value = data.get(name, "")
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise ReportError(f"{name}: text of at most {MAX_TEXT} characters")
            texts[name] = value.replace("\r\n", "\n")
        return cls(template, language, texts["findings"], texts["impression"],
                   _references(data.get("measurements"), with_label=True),
                   _references(data.get("key_images"), with_label=False))

    def items_json(self) -> str:
        return json.dumps({"measurements": self.measurements, "key_images": self.key_images},
                          ensure_ascii=False, sort_keys=True)


def _references(value, *, with_label: bool) -> list[dict]:
    """Image references (series, sop, frame), with the measurement's id, kind and
    label for measurements: copies, so the report says what was measured even if
    the annotation is later changed."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise ReportError(f"at most {MAX_ITEMS} references")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise ReportError("a reference is an object")
        series, sop, frame = item.get("series"), item.get("sop"), item.get("frame", 0)
        if not (isinstance(series, str) and isinstance(sop, str) and is_valid_uid(series)
                and is_valid_uid(sop)) or not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            raise ReportError("a reference needs series, sop (UIDs) and frame (from 0)")
        ref = {"series": series, "sop": sop, "frame": frame}
        if with_label:
            label, kind = item.get("label", ""), item.get("kind", "")
            if not isinstance(label, str) or not isinstance(kind, str):
                raise ReportError("label and kind are text")
            ident = item.get("id")
            ref.update(label=label[:255], kind=kind[:16], id=ident if isinstance(ident, int) else None)
        out.append(ref)
    return out


def canonical_content(study: str, version: int, content: Content, *, author: str, signer: str,
                      signed_at: datetime, amendment_reason: str) -> bytes:
    """The bytes a signature covers: sorted-key compact JSON in UTF-8, times in UTC
    to the second. Anyone holding a version's fields can recompute its hash."""
    return json.dumps({
        "study_instance_uid": study, "version": version, "template": content.template,
        "language": content.language, "findings": content.findings, "impression": content.impression,
        "measurements": content.measurements, "key_images": content.key_images, "author": author,
        "signer": signer, "signed_at": signed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "amendment_reason": amendment_reason,
    }, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def content_hash(*args, **kwargs) -> str:
    return hashlib.sha256(canonical_content(*args, **kwargs)).hexdigest()


# --- versions as read ----------------------------------------------------------------
@dataclass
class Version:
    version: int
    state: str
    content: Content
    author: str
    signer: str
    signed_at: datetime | None
    content_hash: str
    amendment_reason: str
    sr_sop_instance_uid: str
    pdf_sop_instance_uid: str
    updated_at: datetime

    @property
    def signed(self) -> bool:
        return self.state in SIGNED

    def as_dict(self) -> dict:
        c = self.content
        return {"version": self.version, "state": self.state, "template": c.template, "language": c.language,
                "findings": c.findings, "impression": c.impression, "measurements": c.measurements,
                "key_images": c.key_images, "author": self.author, "signer": self.signer,
                "signed_at": _iso(self.signed_at), "content_hash": self.content_hash,
                "amendment_reason": self.amendment_reason, "sr": self.sr_sop_instance_uid,
                "pdf": self.pdf_sop_instance_uid, "updated_at": _iso(self.updated_at)}


@dataclass
class ReportView:
    id: int
    study_instance_uid: str
    state: str
    current: Version
    history: list[Version]          # every version, oldest first (current included)

    def as_dict(self) -> dict:
        return {"id": self.id, "study": self.study_instance_uid, "state": self.state,
                "current": self.current.as_dict(), "history": [v.as_dict() for v in self.history]}


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _version(row: ReportVersion) -> Version:
    items = json.loads(row.items or "{}")
    content = Content(row.template, row.language, row.findings, row.impression,
                      items.get("measurements", []), items.get("key_images", []))
    return Version(row.version, row.state, content, row.author, row.signer, row.signed_at, row.content_hash,
                   row.amendment_reason, row.sr_sop_instance_uid, row.pdf_sop_instance_uid, row.updated_at)


# --- the store -----------------------------------------------------------------------
class Reports:
    """Reports in the index; ``publish`` is Archive.events.publish (or None)."""

    def __init__(self, index: Index, publish=None):
        self.index = index
        self.publish = publish or (lambda name, **fields: None)

    def get(self, study: str) -> ReportView | None:
        _check(study)
        with self.index.read():
            report = Report.get_or_none(Report.study_instance_uid == study)
            if report is None:
                return None
            rows = list(ReportVersion.select().where(ReportVersion.report == report)
                        .order_by(ReportVersion.version))
        history = [_version(r) for r in rows]
        current = next(v for v in history if v.version == report.current_version)
        return ReportView(report.id, study, report.state, current, history)

    def save_draft(self, study: str, username: str, content: Content) -> ReportView:
        """Create the report, or update its draft version with ``content``."""
        _check(study)
        now = utcnow()
        started = False
        with self.index.write():
            report = Report.get_or_none(Report.study_instance_uid == study)
            if report is None:
                report = Report.create(study_instance_uid=study, state=DRAFT, current_version=1,
                                       created_by=username, created_at=now, updated_at=now)
                row = ReportVersion.create(report=report, version=1, state=DRAFT, author=username,
                                           created_at=now, updated_at=now)
                started = True
            else:
                row = ReportVersion.get((ReportVersion.report == report)
                                        & (ReportVersion.version == report.current_version))
                if row.state == PRELIMINARY:
                    # Work on after a preliminary: the next version, the preliminary kept.
                    row = _next_version(report, row, username, now)
                elif row.state != DRAFT:
                    raise ReportLocked("this version is signed; amend the report to change it")
            row.template, row.language = content.template, content.language
            row.findings, row.impression = content.findings, content.impression
            row.items = content.items_json()
            row.author = row.author or username
            row.updated_at = now
            row.save()
            Report.update(updated_at=now).where(Report.id == report.id).execute()
        if started:
            self.publish("report.state", study_instance_uid=study, state="in-progress", username=username,
                         report_id=report.id)
        return self.get(study)

    def amend(self, study: str, username: str, reason: str) -> ReportView:
        """Open version N+1 as a draft with the signed content of N and ``reason``."""
        _check(study)
        reason = (reason or "").strip()
        if not reason or len(reason) > MAX_REASON:
            raise ReportError(f"an amendment needs a reason (at most {MAX_REASON} characters)")
        now = utcnow()
        with self.index.write():
            report = Report.get_or_none(Report.study_instance_uid == study)
            if report is None:
                raise ReportError("there is no report to amend")
            last = ReportVersion.get((ReportVersion.report == report)
                                     & (ReportVersion.version == report.current_version))
            if last.state == PRELIMINARY:
                raise ReportError("a preliminary report is not amended: edit it or sign it final")
            if last.state not in SIGNED:
                raise ReportError("the current version is a draft: edit it instead")
            ReportVersion.create(report=report, version=last.version + 1, state=DRAFT, template=last.template,
                                 language=last.language, findings=last.findings, impression=last.impression,
                                 items=last.items, author=username, amendment_reason=reason,
                                 created_at=now, updated_at=now)
            Report.update(current_version=last.version + 1, updated_at=now).where(Report.id == report.id).execute()
        # A new version is being written: the worklist shows the study in progress
        # again until the amendment is signed ("amended").
        self.publish("report.state", study_instance_uid=study, state="in-progress", username=username,
                     report_id=report.id)
        return self.get(study)

    def sign(self, study: str, username: str, make_objects=None, *, preliminary: bool = False) -> ReportView:
        """Sign the current draft final (or amended), or issue it ``preliminary``.
        ``make_objects(view, version)``, when given, stores the SR (and, for a final
        version, the PDF) and returns their SOP Instance UIDs; it runs before the
        signature is recorded, so a report whose objects could not be stored stays a
        draft. Signing final when the current version is preliminary signs its content
        as the next version."""
        view = self.get(study)
        if view is None:
            raise ReportError("there is no report to sign")
        current = view.current
        was_final = any(v.state in (FINAL, AMENDED) for v in view.history)
        if preliminary and was_final:
            raise ReportLocked("the report is final: amend it instead")
        if current.state == PRELIMINARY and not preliminary:
            with self.index.write():
                report = Report.get(Report.study_instance_uid == study)
                row = ReportVersion.get((ReportVersion.report == report)
                                        & (ReportVersion.version == current.version))
                _next_version(report, row, username, utcnow())
            view = self.get(study)
            current = view.current
        if current.signed:
            raise ReportLocked("this version is already signed")
        if not (current.content.findings.strip() or current.content.impression.strip()):
            raise ReportError("an empty report cannot be signed")
        signed_at = utcnow().replace(microsecond=0)
        state = PRELIMINARY if preliminary else AMENDED if was_final else FINAL
        digest = content_hash(study, current.version, current.content, author=current.author, signer=username,
                              amendment_reason=current.amendment_reason,
                              signed_at=signed_at.replace(tzinfo=timezone.utc))
        signed = Version(current.version, state, current.content, current.author, username, signed_at, digest,
                         current.amendment_reason, "", "", signed_at)
        sr_uid, pdf_uid = make_objects(view, signed) if make_objects else ("", "")
        with self.index.write():
            report = Report.get(Report.study_instance_uid == study)
            row = ReportVersion.get((ReportVersion.report == report) & (ReportVersion.version == current.version))
            # The content hashed must be the content stored: no save (another tab) came in
            # while the objects were made, and nobody signed first.
            if row.state != DRAFT or _version(row).content != current.content:
                raise ReportLocked("this version was changed or signed meanwhile; sign again")
            ReportVersion.update(state=state, signer=username, signed_at=signed_at, content_hash=digest,
                                 sr_sop_instance_uid=sr_uid, pdf_sop_instance_uid=pdf_uid,
                                 updated_at=signed_at).where(ReportVersion.id == row.id).execute()
            Report.update(state=state, updated_at=signed_at).where(Report.id == report.id).execute()
        self.publish("report.state", study_instance_uid=study, state=state, username=username, report_id=view.id)
        return self.get(study)

    @staticmethod
    def verify(view: ReportView, version: Version) -> bool:
        """Whether a signed version's content still hashes to what was recorded."""
        return version.signed and version.content_hash == content_hash(
            view.study_instance_uid, version.version, version.content, author=version.author,
            signer=version.signer, signed_at=version.signed_at.replace(tzinfo=timezone.utc),
            amendment_reason=version.amendment_reason)


def _next_version(report: Report, row: ReportVersion, username: str, now: datetime) -> ReportVersion:
    """Version N+1 as a draft holding version N's content (inside the caller's write
    transaction): how work goes on after a preliminary."""
    created = ReportVersion.create(report=report, version=row.version + 1, state=DRAFT, template=row.template,
                                   language=row.language, findings=row.findings, impression=row.impression,
                                   items=row.items, author=username, created_at=now, updated_at=now)
    Report.update(current_version=row.version + 1, updated_at=now).where(Report.id == report.id).execute()
    return created


def _check(study: str) -> None:
    if not is_valid_uid(study):
        raise ReportError("invalid study UID")
