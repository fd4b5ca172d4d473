"""Reports over HTTP: the editor page and its JSON endpoints, a thin adapter over
archive/reports.py (content, states, history) and archive/derived/reporting.py
(the SR and PDF a signature stores).

Reading a report needs VIEW on the study; writing, signing and amending need a
reporting role (``REPORT_ROLES``). Signing confirms the signer's identity in the
request itself, every time, through the same decision as the re-authentication
page (archive/sessions.py ``reauthenticate``): the TOTP code when the user has a
second factor, else the password. A remembered re-authentication is not enough
for a signature. Writes carry the session's CSRF token (DSM.fetch) and are audited.
"""
from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, render_template, request
from werkzeug.exceptions import Forbidden

from dsmpacs.archive.annotations import KINDS, AnnotationError, Annotations
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.browse import study_detail
from dsmpacs.archive.derived.reporting import objects_for_signature, stored_pdf
from dsmpacs.archive.reports import LANGUAGES, Content, ReportError, ReportLocked, Reports, templates
from dsmpacs.archive.uids import is_valid_uid
from dsmpacs.archive.users import Permission
from dsmpacs.web import audit, auth, scoping
from dsmpacs.web.i18n import catalog, current_language
from dsmpacs.web.services import services

bp = Blueprint("reports", __name__)
# A report belongs to its study: outside the user's institutions and grants it does
# not exist (404), checked before any view like the study browser's (web/scoping.py).
bp.before_request(scoping.guard_study_arguments)
REPORT_ROLES = frozenset({"radiologist", "admin"})
AUDIT_SIGN, AUDIT_AMEND, AUDIT_START = "report-sign", "report-amend", "report-start"
# A calibration line is the reader's tool, not a finding (as in archive/derived/saving.py).
_NOT_FINDINGS = {"calibrate"}


def may_write() -> bool:
    user = auth.current_user()
    return user is not None and user.role.value in REPORT_ROLES


def _reports() -> Reports:
    archive = services().archive
    return Reports(archive.index, archive.events.publish)


def _study_or_404(study_uid: str):
    """The study's detail; 404 when it is not there or not the user's to see."""
    if not is_valid_uid(study_uid):
        abort(404)
    detail = study_detail(services().archive.index, study_uid)
    if detail is None or not _allowed(study_uid):
        abort(404)
    return detail


def _allowed(study_uid: str) -> bool:
    """The same question as the before_request guard, asked again by the view that
    serves the study so that serving never depends on the guard alone."""
    svc = services()
    scope = svc.scope()
    return scope.is_everything or scope.allows(study_uid, svc.archive.index)


def _writer() -> None:
    if not may_write():
        audit.record_refusal(403, "needs a reporting role")
        raise Forbidden("report")


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "a JSON object is expected")
    return body


def _refused(exc: ReportError):
    status = 409 if isinstance(exc, ReportLocked) else 400
    return jsonify(error="locked" if status == 409 else "invalid", message=str(exc)), status


def _measurements(study_uid: str) -> list[dict]:
    """The user's annotations on the study, as the editor offers them to insert."""
    try:
        marks = Annotations(services().archive.index).for_study(auth.current_user().username, study_uid)
    except AnnotationError:
        return []
    return [{"id": m.id, "kind": m.kind, "label": m.label, "series": m.series, "sop": m.sop, "frame": m.frame}
            for m in marks if m.kind not in _NOT_FINDINGS and m.label]


def _state(study_uid: str, view=None) -> dict:
    view = view if view is not None else _reports().get(study_uid)
    user = auth.current_user()
    return {"report": view.as_dict() if view else None, "can_write": may_write(),
            "needs_code": services().second_factor.enrolled(user.id),
            "verified": [Reports.verify(view, v) for v in view.history if v.signed] if view else []}


@bp.route("/<study_uid>")
@auth.requires(Permission.VIEW)
def editor(study_uid: str):
    detail = _study_or_404(study_uid)
    # The report's content is read (and audited) by the JSON the page fetches.
    return render_template("reports/editor.html", detail=detail, study_uid=study_uid)


@bp.route("/<study_uid>.json")
@auth.requires(Permission.VIEW)
def report_json(study_uid: str):
    """The report (or null), the templates in both languages, the user's measurements."""
    _study_or_404(study_uid)
    audit.record_view(study_uid, detail="report")
    payload = _state(study_uid)
    payload.update(
        templates=[{"id": t.id, "title": t.title, "findings": t.findings, "impression": t.impression,
                    "modalities": list(t.modalities)} for t in templates().values()],
        languages=list(LANGUAGES), language=current_language(), measurements=_measurements(study_uid),
        # A measurement inserted into a Chinese report is named in Chinese, whatever the UI language.
        kinds={lang: {kind: catalog(lang).get(f"js.report.kind_{kind}", kind) for kind in KINDS} for lang in LANGUAGES})
    return jsonify(payload)


@bp.route("/<study_uid>/draft", methods=["PUT"])
@auth.requires(Permission.VIEW)
def save_draft(study_uid: str):
    """Autosave: the draft becomes the body's content (idempotent)."""
    _study_or_404(study_uid)
    _writer()
    user = auth.current_user()
    try:
        started = _reports().get(study_uid) is None
        view = _reports().save_draft(study_uid, user.username, Content.parse(_body()))
    except ReportError as exc:
        return _refused(exc)
    if started:
        audit.record(AUDIT_START, study_instance_uid=study_uid, detail=f"report {view.id}")
    return jsonify(_state(study_uid, view))


def _identity_confirmed(body: dict) -> str | None:
    """None when the signer proved who they are now; else the refusal's code."""
    svc = services()
    state = auth.current_session()
    if state is None:
        return "session"            # an API token or Basic client cannot sign
    account = state.account
    auth.check_throttle(account.username)
    code = str(body.get("code") or "").strip()
    password = str(body.get("password") or "")
    if svc.second_factor.enrolled(account.id):
        if not code:
            return "code"
        password = ""
    elif not password:
        return "password"
    result = svc.sessions.reauthenticate(state, password=password, code=code, users=svc.users,
                                         second_factor=svc.second_factor)
    if result is True:
        audit.record(AuditAction.REAUTH, detail=f"report signature by {'code' if code else 'password'}")
        return None
    if code:
        detail = "report signature: " + ("code already used" if result == "replay" else "wrong code")
        auth.login_failed(account.username, detail, AuditAction.TOTP_FAILED)
    else:
        auth.login_failed(account.username, "report signature by password")
    return "wrong"


@bp.route("/<study_uid>/sign", methods=["POST"])
@auth.requires(Permission.VIEW)
def sign(study_uid: str):
    """{"code"} or {"password"}, and {"preliminary": true} to issue it preliminary:
    sign the current draft (or a preliminary version final); stores the SR and PDF
    (the SR only for a preliminary). The same proof of identity either way."""
    _study_or_404(study_uid)
    _writer()
    body = _body()
    preliminary = body.get("preliminary") is True
    refusal = _identity_confirmed(body)
    if refusal is not None:
        return jsonify(error="reauth", reason=refusal), 401 if refusal == "wrong" else 403
    user = auth.current_user()
    archive = services().archive
    try:
        view = _reports().sign(study_uid, user.username, objects_for_signature(archive.index, archive.ingest),
                               preliminary=preliminary)
    except ReportError as exc:
        return _refused(exc)
    current = view.current
    audit.record(AUDIT_SIGN, study_instance_uid=study_uid,
                 detail=f"report {view.id} v{current.version} {current.state} sha256 {current.content_hash}")
    for sop in filter(None, (current.sr_sop_instance_uid, current.pdf_sop_instance_uid)):
        audit.record(AuditAction.STORE, study_instance_uid=study_uid, detail=f"report object {sop}")
    return jsonify(_state(study_uid, view))


@bp.route("/<study_uid>/amend", methods=["POST"])
@auth.requires(Permission.VIEW)
def amend(study_uid: str):
    """{"reason"}: open the next version as a draft."""
    _study_or_404(study_uid)
    _writer()
    reason = _body().get("reason")
    try:
        view = _reports().amend(study_uid, auth.current_user().username, reason if isinstance(reason, str) else "")
    except ReportError as exc:
        return _refused(exc)
    audit.record(AUDIT_AMEND, study_instance_uid=study_uid,
                 detail=f"report {view.id} v{view.current.version}: {view.current.amendment_reason}"[:1024])
    return jsonify(_state(study_uid, view))


@bp.route("/<study_uid>/v<int:version>.pdf")
@auth.requires(Permission.VIEW)
def version_pdf(study_uid: str, version: int):
    """The PDF of a signed version, as stored in the study (to print or save)."""
    _study_or_404(study_uid)
    view = _reports().get(study_uid)
    found = next((v for v in view.history if v.version == version and v.pdf_sop_instance_uid), None) if view else None
    body = stored_pdf(services().archive, study_uid, found.pdf_sop_instance_uid) if found else None
    if body is None:
        abort(404)
    audit.record_view(study_uid, detail=f"report PDF v{version}")
    response = Response(body, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="report-v{version}.pdf"'
    response.headers["Cache-Control"] = "private, no-store"
    return response
