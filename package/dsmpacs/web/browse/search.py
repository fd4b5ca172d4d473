"""The search form with paging, and one patient's studies on a timeline."""
from __future__ import annotations

import logging
import re

from flask import abort, render_template, request

from dsmpacs.archive.audit import AuditAction, query_fields
from dsmpacs.archive.browse import patient_timeline, search_studies
from dsmpacs.archive.matching import QueryError
from dsmpacs.archive.names import typed_name_value
from dsmpacs.web import audit
from dsmpacs.web.browse import bp
from dsmpacs.web.i18n import _
from dsmpacs.web.services import services

log = logging.getLogger(__name__)

PER_PAGE = 25
FIELDS = ("patient_name", "patient_id", "accession", "date_from", "date_to", "modality", "description")
_DATE = re.compile(r"^\d{4}-?\d{2}-?\d{2}$")
_MODALITY = re.compile(r"^[A-Za-z0-9_]{1,16}$")


def _date(value: str) -> str | None:
    value = value.strip()
    if not value:
        return ""
    return value.replace("-", "") if _DATE.match(value) else None


def filters_from(form) -> tuple[dict[str, str], list[str]]:
    """The form's fields as matcher keys, and the names of fields that were not understood.

    Names match from their start, as the list shows them (``zhang`` finds ZHANG^SAN,
    ``张三`` finds 张^三, ``Wang Xiaoming`` finds WANG^XIAOMING: archive/names.py) unless
    the user typed a wildcard; descriptions match anywhere."""
    filters: dict[str, str] = {}
    invalid: list[str] = []
    name = form.get("patient_name", "").strip()
    if name:
        filters["PatientName"] = typed_name_value(name)
    for field, key in (("patient_id", "PatientID"), ("accession", "AccessionNumber")):
        value = form.get(field, "").strip()
        if value:
            filters[key] = value
    description = form.get("description", "").strip()
    if description:
        filters["StudyDescription"] = description if "*" in description else f"*{description}*"
    modality = form.get("modality", "").strip()
    if modality:
        if _MODALITY.match(modality):
            filters["ModalitiesInStudy"] = modality.upper()
        else:
            invalid.append("modality")
    start, end = _date(form.get("date_from", "")), _date(form.get("date_to", ""))
    if start is None:
        invalid.append("date_from")
    if end is None:
        invalid.append("date_to")
    if start or end:
        filters["StudyDate"] = f"{start or ''}-{end or ''}" if start != end else start
    return filters, invalid


@bp.route("/")
@bp.route("/studies")
def index():
    """The landing page: a reader opens the archive to find a patient."""
    filters, invalid = filters_from(request.args)
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    result, error = None, None
    if not invalid:
        audit.record(AuditAction.SEARCH, **query_fields("study list", "STUDY", filters))
        try:
            result = search_studies(services().archive.index, filters, page=page, per_page=PER_PAGE,
                                    scope=services().scope())
        except QueryError as exc:
            log.info("study list query refused: %s", exc)
            error = _("study.search.invalid")
    return render_template("studies/index.html", result=result, invalid=invalid, error=error,
                           form=request.args, searched=bool(filters)), (400 if invalid or error else 200)


@bp.route("/patients/<int:patient_row>")
def patient(patient_row: int):
    found = patient_timeline(services().archive.index, patient_row, services().scope())
    if found is None:
        abort(404)
    patient, studies = found
    return render_template("studies/patient.html", patient=patient, studies=studies)
