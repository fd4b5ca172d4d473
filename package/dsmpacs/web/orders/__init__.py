"""Registration pages: orders (form, CSV import, list with states) and the
reconciliation of arrived studies that did not match an order.

Thin adapters over archive/orders.py, archive/ordercsv.py and
archive/reconcile.py. Registration is open to the roles in
``orders.REGISTRAR_ROLES`` (admin and radiologist: there is no registrar role
yet); linking a study to an order on the reconciliation page is an
administrator's decision. Every change is audited.
"""
from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.exceptions import Forbidden

from dsmpacs.archive import orders as domain
from dsmpacs.archive.ordercsv import COLUMNS, MAX_BYTES, MAX_ROWS, REQUIRED, ImportRefused, import_csv
from dsmpacs.archive.orders import PRIORITIES, OrderError, OrderInput, Orders, State
from dsmpacs.archive.reconcile import Reconciler
from dsmpacs.archive.users import Permission
from dsmpacs.web import audit, auth
from dsmpacs.web.i18n import notify
from dsmpacs.web.services import services

bp = Blueprint("orders", __name__)
PAGE_SIZE = 50


def may_register() -> bool:
    user = auth.current_user()
    return user is not None and user.role.value in domain.REGISTRAR_ROLES


@bp.app_context_processor
def _nav() -> dict:
    return {"may_register_orders": may_register}


@bp.before_request
def _registrars_only():
    if not may_register():
        audit.record_refusal(403, "needs a registration role")
        raise Forbidden("registration")


def _orders() -> Orders:
    return Orders(services().archive.index)


def _page(import_result=None, import_error=None, status: int = 200):
    state = request.args.get("state", "")
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    rows = _orders().list(state=State(state) if state in {s.value for s in State} else None,
                          text=request.args.get("q", "")[:64], limit=PAGE_SIZE + 1,
                          offset=(page - 1) * PAGE_SIZE, scope=services().scope())
    return render_template("orders/index.html", orders=rows[:PAGE_SIZE], has_next=len(rows) > PAGE_SIZE,
                           page=page, states=list(State), state=state, columns=COLUMNS, required=REQUIRED,
                           max_rows=MAX_ROWS, max_kib=MAX_BYTES // 1024, result=import_result,
                           import_error=import_error), status


def _registrar_institution() -> int | None:
    """An order belongs to its registrar's institution: the one named in the form
    (among theirs), else their first. None for a global admin naming none (default)."""
    from dsmpacs.archive.institutions import InstitutionError, Institutions

    institutions = Institutions(services().archive.index)
    scope = services().scope()
    named = request.form.get("institution", "").strip()
    if named:
        try:
            inst = institutions.get(named)
        except InstitutionError:
            inst = None
        if inst is not None and scope.allows_institution(inst.id):
            return inst.id
    if scope.is_everything:
        return None
    mine = institutions.memberships_of(auth.current_user().username)
    return mine[0].institution_id if mine else None


@bp.route("/")
def index():
    return _page()


@bp.route("/new", methods=["GET", "POST"])
def new():
    if request.method == "GET":
        return render_template("orders/new.html", form={}, error=None, priorities=PRIORITIES)
    data = OrderInput(**{name: request.form.get(name, "")[:256] for name in OrderInput.names()})
    user = auth.current_user()
    try:
        order = _orders().create(data, actor=user.username, institution=_registrar_institution())
    except OrderError as exc:
        return render_template("orders/new.html", form=request.form, error=exc, priorities=PRIORITIES), 400
    audit.record(domain.AUDIT_CREATE, patient_id=order.patient_id, patient_name=order.patient_name,
                 detail=f"accession {order.accession_number}: {order.modality} {order.procedure_description} "
                        f"on {order.scheduled_date} at {order.station_ae}")
    notify("orders.created", accession=order.accession_number)
    return redirect(url_for("orders.index"))


@bp.route("/import", methods=["POST"])
def import_file():
    upload = request.files.get("file")
    if upload is None:
        return _page(import_error="empty", status=400)
    data = upload.stream.read(MAX_BYTES + 1)
    try:
        result = import_csv(_orders(), data, actor=auth.current_user().username,
                            institution=_registrar_institution())
    except ImportRefused as exc:
        return _page(import_error=exc.code, status=400)
    audit.record(domain.AUDIT_IMPORT, detail=f"{upload.filename or 'CSV'}: {len(result.created)} orders, "
                                             f"{len(result.errors)} lines refused "
                                             f"({', '.join(str(e.line) for e in result.errors[:20])})")
    return _page(import_result=result)


@bp.route("/<int:order_id>/state", methods=["POST"])
def set_state(order_id: int):
    try:
        state = State(request.form.get("state", ""))
        order = _orders().set_state(order_id, state, services().scope())
    except ValueError as exc:        # an unknown state, or an OrderError
        if isinstance(exc, OrderError) and exc.code == "not_found":
            abort(404)
        notify("orders.state_refused", "error")
        return redirect(url_for("orders.index"))
    audit.record(domain.AUDIT_STATE, patient_id=order.patient_id, patient_name=order.patient_name,
                 detail=f"accession {order.accession_number}: {state.value}")
    notify("orders.state_changed", accession=order.accession_number)
    return redirect(url_for("orders.index"))


@bp.route("/reconcile")
def reconcile():
    arrivals = Reconciler(services().archive.index).arrivals()
    return render_template("orders/reconcile.html", arrivals=arrivals, error=None)


@bp.route("/reconcile/<int:arrival_id>/link", methods=["POST"])
def link(arrival_id: int):
    auth.require(Permission.ADMIN)
    reconciler = Reconciler(services().archive.index)
    accession = request.form.get("accession_number", "")[:64]
    try:
        arrival = reconciler.link(arrival_id, accession, actor=auth.current_user().username)
    except OrderError as exc:
        if exc.code == "not_found":
            abort(404)
        return render_template("orders/reconcile.html", arrivals=reconciler.arrivals(), error=exc), 400
    audit.record(domain.AUDIT_LINK, study_instance_uid=arrival.study_instance_uid,
                 patient_id=arrival.patient_id, patient_name=arrival.patient_name,
                 detail=f"linked to order {arrival.order_accession} (patient {arrival.order_patient_id}); "
                        f"the study arrived with accession {arrival.accession_number}")
    notify("orders.linked", accession=arrival.order_accession)
    return redirect(url_for("orders.reconcile"))
