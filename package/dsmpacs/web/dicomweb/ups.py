"""UPS-RS (PS3.18 §11): the reading worklist as Unified Procedure Step workitems.

Each reading task (archive/reading.py) is one workitem: its UPS SOP Instance
UID, Procedure Step State derived from the task state (SCHEDULED: unread or
assigned; IN PROGRESS: being read or preliminary; COMPLETED: final or amended;
CANCELED), Scheduled Procedure Step Priority, and the assignee as the Scheduled
Human Performers Sequence. Resources:

- ``GET /workitems`` Search (QIDO-style matching on any attribute of the
  workitem, nested ones as ``Sequence.Keyword``; UID lists, ``*``/``?``
  wildcards, date-time ranges; ``limit``/``offset``/``includefield``);
- ``GET /workitems/{uid}`` Retrieve;
- ``POST /workitems{?workitem}`` Create (a coordinator; state SCHEDULED);
- ``PUT /workitems/{uid}/state`` Change State: IN PROGRESS with the performer's
  Transaction UID claims the task; COMPLETED or CANCELED need the same UID;
- ``POST /workitems/{uid}/cancelrequest`` Request Cancellation of a SCHEDULED
  workitem.

Bodies are DICOM JSON. Refusals follow PS3.18 Table 11.7.3-2 and friends: 400
for a malformed request, 404 for an unknown (or invisible) workitem, 409 when the
workitem's state or the Transaction UID forbids the change, each with a Warning
header carrying the PS3.4 status; a change to the state it already has is 200
with a Warning. See docs/dicomweb.md.
"""
from __future__ import annotations

import fnmatch
import json
import re
from datetime import datetime

from flask import Response, request
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dsmpacs.archive import reading as domain
from dsmpacs.archive.reading import ReadingError, Task
from dsmpacs.archive.reading_rules import PRIORITIES
from dsmpacs.archive.uids import is_valid_uid
from dsmpacs.archive.users import Permission
from dsmpacs.web import audit, auth
from dsmpacs.web.dicomweb import dicomjson
from dsmpacs.web.dicomweb.common import base_url, bp, fail
from dsmpacs.web.reading.access import is_coordinator, visible
from dsmpacs.web.services import services

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
DICOM_JSON = "application/dicom+json"
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
RESERVED = {"limit", "offset", "includefield", "fuzzymatching", "accept", "charset"}
SCAN_LIMIT = 5000
# Returned by Search unless includefield asks for more (PS3.4 Table CC.2.5-3 "return keys").
SEARCH_FIELDS = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "ProcedureStepState",
                 "ScheduledProcedureStepPriority", "ProcedureStepLabel", "ScheduledProcedureStepStartDateTime",
                 "ExpectedCompletionDateTime", "ScheduledHumanPerformersSequence", "PatientName", "PatientID",
                 "InputInformationSequence", "ReferencedRequestSequence", "InputReadinessState")


def _key(keyword: str) -> str:
    return dicomjson.keyword_key(keyword)


def _dt(value: datetime | None) -> dict:
    return {"vr": "DT", "Value": [value.strftime("%Y%m%d%H%M%S")]} if value else {"vr": "DT"}


def _text(vr: str, value: str) -> dict:
    return dicomjson.attribute(vr, value)


def dataset_of(task: Task) -> dict[str, dict]:
    """A task as a UPS dataset in DICOM JSON (never its Transaction UID: PS3.4
    CC.2.5.1.3 keeps it between the performer and the SCP)."""
    performers = []
    if task.assignee:
        performers.append({
            _key("HumanPerformerCodeSequence"): {"vr": "SQ", "Value": [{
                _key("CodeValue"): _text("SH", task.assignee[:16]),
                _key("CodingSchemeDesignator"): _text("SH", "99DSMPACS"),
                _key("CodeMeaning"): _text("LO", task.assignee)}]},
            _key("HumanPerformerName"): _text("PN", task.assignee),
        })
    study = {_key("StudyInstanceUID"): _text("UI", task.study_instance_uid)}
    request_item = {**study, _key("AccessionNumber"): _text("SH", task.accession_number),
                    _key("RequestedProcedureDescription"): _text("LO", task.description)}
    out = {
        _key("SpecificCharacterSet"): {"vr": "CS", "Value": [dicomjson.UTF8]},
        _key("SOPClassUID"): _text("UI", UPS_PUSH),
        _key("SOPInstanceUID"): _text("UI", task.ups_uid),
        _key("ProcedureStepState"): _text("CS", task.ups_state),
        _key("ScheduledProcedureStepPriority"): _text("CS", task.priority),
        _key("ProcedureStepLabel"): _text("LO", task.description or "Read study"),
        _key("WorklistLabel"): _text("LO", task.institution or "reading"),
        _key("ScheduledProcedureStepStartDateTime"): _dt(task.created_at),
        _key("ScheduledProcedureStepModificationDateTime"): _dt(task.updated_at),
        _key("ExpectedCompletionDateTime"): _dt(task.due_at),
        _key("ScheduledHumanPerformersSequence"): {"vr": "SQ", "Value": performers},
        _key("InputReadinessState"): _text("CS", "READY"),
        _key("InputInformationSequence"): {"vr": "SQ", "Value": [study]},
        _key("ReferencedRequestSequence"): {"vr": "SQ", "Value": [request_item]},
        _key("PatientName"): _text("PN", task.patient_name),
        _key("PatientID"): _text("LO", task.patient_id),
        _key("Modality"): _text("CS", task.modality),
    }
    return dict(sorted(out.items()))


def _json(body, status: int = 200, **headers) -> Response:
    response = Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=DICOM_JSON)
    response.headers.update(headers)
    return response


def _warning(text: str) -> str:
    return f'299 {request.host.split(":")[0]} "{text}"'


def _refuse(status: int, code: str, text: str):
    """An error with the PS3.4 status in a Warning header, as PS3.18 §11 asks."""
    response = Response(text + "\n", status=status, mimetype="text/plain")
    response.headers["Warning"] = _warning(f"{code}: {text}")
    from flask import abort
    abort(response)


def _visible_task(uid: str) -> Task:
    if not is_valid_uid(uid):
        fail(400, f"{uid[:80]!r} is not a valid UID")
    try:
        task = services().archive.reading.by_ups(uid)
    except ReadingError:
        task = None
    if task is None or not visible(task):
        fail(404, "no such workitem")
    return task


# --- matching (QIDO-style) ----------------------------------------------------------
def _keyword(name: str) -> str:
    keyword = keyword_for_tag(int(name, 16)) if _TAG_RE.match(name) else name
    if not keyword or tag_for_keyword(keyword) is None:
        fail(400, f"unknown query parameter {name!r}")
    return keyword


def _values(dataset: dict, path: list[str]) -> list | None:
    """The values at ``path`` (keywords), descending every sequence item; None when
    the attribute is absent everywhere."""
    elem = dataset.get(_key(path[0]))
    if elem is None:
        return None
    if len(path) == 1:
        return elem.get("Value", [])
    found: list | None = None
    for item in elem.get("Value", []) or []:
        inner = _values(item, path[1:])
        if inner is not None:
            found = (found or []) + inner
    return found


def _flat(value) -> str:
    if isinstance(value, dict):        # a person name
        return "=".join(value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
    return str(value)


def _matches(vr: str, wanted: str, values: list) -> bool:
    texts = [_flat(v) for v in values if v is not None]
    if wanted == "":
        return True
    if vr == "UI" or (vr == "CS" and ("," in wanted or "\\" in wanted)):
        options = {w.strip() for w in re.split(r"[,\\]", wanted) if w.strip()}
        return any(t in options for t in texts)
    if vr in ("DA", "DT", "TM") and "-" in wanted:
        low, high = wanted.split("-", 1)
        return any((not low or t[:len(low)] >= low) and (not high or t[:len(high)] <= high) for t in texts)
    if "*" in wanted or "?" in wanted:
        return any(fnmatch.fnmatchcase(t.casefold(), wanted.casefold()) for t in texts)
    if vr == "PN":
        return any(t.casefold() == wanted.casefold() or t.casefold().startswith(wanted.casefold() + "^")
                   for t in texts)
    return any(t == wanted for t in texts)


def _criteria() -> list[tuple[list[str], str, str]]:
    out = []
    for name, wanted in request.args.items(multi=True):
        if name in RESERVED:
            continue
        path = [_keyword(part) for part in name.split(".")]
        out.append((path, dictionary_VR(tag_for_keyword(path[-1])), wanted))
    return out


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name, "")
    if raw == "":
        return default
    if not raw.isdigit():
        fail(400, f"{name} must be a non-negative integer")
    return int(raw)


@bp.route("/workitems", methods=["GET"])
@auth.requires(Permission.VIEW)
def search_workitems():
    criteria = _criteria()
    limit = min(_int_arg("limit", services().settings.query_limit), services().settings.query_limit)
    offset = _int_arg("offset", 0)
    include = {_keyword(n) for v in request.args.getlist("includefield") for n in re.split(r"[,\s]+", v)
               if n and n != "all"}
    everything = "all" in request.args.getlist("includefield")
    matched = []
    for task in services().archive.reading.tasks(visible=visible, limit=SCAN_LIMIT):
        item = dataset_of(task)
        if all(_matches(vr, wanted, _values(item, path) or []) for path, vr, wanted in criteria):
            matched.append(item)
    page = matched[offset:offset + limit]
    audit.record("ups-search", detail=f"{len(matched)} workitems: {request.query_string.decode()[:200]}")
    if not page:
        return Response(status=204)
    if not everything:
        keep = {_key(k) for k in (*SEARCH_FIELDS, *include)} | {_key(p[0]) for p, _, _ in criteria}
        page = [{k: v for k, v in item.items() if k in keep} for item in page]
    headers = {}
    if len(matched) > offset + limit:
        headers["Warning"] = _warning(f"{len(matched) - offset - limit} more workitems match; "
                                      "use offset to page")
    return _json(page, **headers)


@bp.route("/workitems/<workitem>", methods=["GET"])
@auth.requires(Permission.VIEW)
def retrieve_workitem(workitem: str):
    uid = workitem
    task = _visible_task(uid)
    audit.record_view(task.study_instance_uid, detail=f"workitem {uid}", action="ups-retrieve")
    return _json([dataset_of(task)])


# --- changes ----------------------------------------------------------------------
def _dataset() -> dict:
    if request.mimetype not in (DICOM_JSON, "application/json"):
        fail(415, "the payload must be application/dicom+json")
    try:
        body = json.loads(request.get_data(cache=False) or b"null")
    except ValueError:
        fail(400, "the payload is not JSON")
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        fail(400, "the payload must be one DICOM JSON dataset")
    return body


def _one(dataset: dict, *path: str) -> str:
    values = _values(dataset, list(path)) or []
    return _flat(values[0]).strip() if values and values[0] is not None else ""


def _location(uid: str) -> str:
    return f"{base_url()}/workitems/{uid}"


@bp.route("/workitems", methods=["POST"])
@auth.requires(Permission.VIEW)
def create_workitem():
    if not is_coordinator():
        fail(403, "only a reading coordinator may create workitems")
    ds = _dataset()
    uid = request.args.get("workitem", "") or _one(ds, "SOPInstanceUID")
    state = _one(ds, "ProcedureStepState") or "SCHEDULED"
    if state != "SCHEDULED":
        _refuse(400, "0x0106", "a workitem is created SCHEDULED (PS3.4 CC.2.5.3.1)")
    if _one(ds, "TransactionUID"):
        _refuse(400, "0x0106", "a workitem is created without a Transaction UID")
    study = (_one(ds, "InputInformationSequence", "StudyInstanceUID")
             or _one(ds, "ReferencedRequestSequence", "StudyInstanceUID") or _one(ds, "StudyInstanceUID"))
    if not is_valid_uid(study) or (uid and not is_valid_uid(uid)):
        _refuse(400, "0x0106", "a workitem needs a Study Instance UID (Input Information Sequence) "
                               "and, when given, a valid SOP Instance UID")
    priority = _one(ds, "ScheduledProcedureStepPriority") or "MEDIUM"
    if priority not in PRIORITIES:
        _refuse(400, "0x0106", f"Scheduled Procedure Step Priority must be one of {', '.join(PRIORITIES)}")
    due = _one(ds, "ExpectedCompletionDateTime")
    try:
        due_at = datetime.strptime(due[:14], "%Y%m%d%H%M%S") if due else None
    except ValueError:
        _refuse(400, "0x0106", "Expected Completion DateTime is not a DICOM DT")
    user = auth.current_user()
    reading = services().archive.reading
    try:
        task = reading.create(study, ups_uid=uid, priority=priority, due_at=due_at,
                              patient_id=_one(ds, "PatientID"), patient_name=_one(ds, "PatientName"),
                              accession_number=_one(ds, "ReferencedRequestSequence", "AccessionNumber"),
                              description=_one(ds, "ProcedureStepLabel"), actor=user.username)
    except ReadingError as exc:
        _refuse(409 if exc.code == "conflict" else 400, "0x0111" if exc.code == "conflict" else "0x0106",
                str(exc))
    performer = _one(ds, "ScheduledHumanPerformersSequence", "HumanPerformerCodeSequence", "CodeValue")
    if performer:
        task = reading.assign(task.id, performer, by=user.username)
        audit.record(domain.AUDIT_ASSIGN, study_instance_uid=study, patient_id=task.patient_id,
                     patient_name=task.patient_name, detail=f"task {task.id} assigned to {performer} (UPS-RS)")
    return Response(status=201, headers={"Location": _location(task.ups_uid),
                                         "Content-Location": _location(task.ups_uid)})


@bp.route("/workitems/<workitem>/state", methods=["PUT"])
@auth.requires(Permission.VIEW)
def change_state(workitem: str):
    uid = workitem
    task = _visible_task(uid)
    ds = _dataset()
    target, transaction = _one(ds, "ProcedureStepState"), _one(ds, "TransactionUID")
    if target not in ("IN PROGRESS", "COMPLETED", "CANCELED"):
        _refuse(400, "0xC303", "Procedure Step State must be IN PROGRESS, COMPLETED or CANCELED")
    if not transaction:
        _refuse(400, "0xC301", "the Transaction UID is missing")
    if task.ups_state == target and target in ("COMPLETED", "CANCELED"):
        # PS3.4 CC.2.1.3: already there is a success with a warning (B306 / B304).
        code = "0xB306" if target == "COMPLETED" else "0xB304"
        return Response(status=200, headers={"Warning": _warning(f"{code}: the workitem is already {target}")})
    user = auth.current_user()
    reading = services().archive.reading
    try:
        if target == "IN PROGRESS":
            if task.assignee not in ("", user.username) and not is_coordinator(task):
                _refuse(409, "0xC302", f"the workitem is assigned to {task.assignee}")
            done = reading.start(task.id, user.username, transaction)
        else:
            done = reading.finish(task.id, transaction, target)
    except ReadingError as exc:
        if exc.code == "transaction":
            _refuse(409 if target != "IN PROGRESS" else 400, "0xC301", str(exc))
        _refuse(409, _conflict_status(task.ups_state, target), str(exc))
    audit.record(domain.AUDIT_STATE, study_instance_uid=done.study_instance_uid, patient_id=done.patient_id,
                 patient_name=done.patient_name,
                 detail=f"task {done.id} workitem {uid}: {task.ups_state} -> {target} ({done.state}) (UPS-RS)")
    return Response(status=200)


def _conflict_status(current: str, target: str) -> str:
    """The PS3.4 status of a state change the workitem's state forbids."""
    if current == "SCHEDULED":
        return "0xC310"          # not yet IN PROGRESS
    if current == "IN PROGRESS":
        return "0xC302"          # already IN PROGRESS
    return "0xC300"              # COMPLETED or CANCELED: may no longer be updated


@bp.route("/workitems/<workitem>/cancelrequest", methods=["POST"])
@auth.requires(Permission.VIEW)
def request_cancellation(workitem: str):
    uid = workitem
    task = _visible_task(uid)
    if not is_coordinator(task):
        fail(403, "only a reading coordinator may cancel workitems")
    if task.ups_state == "CANCELED":
        return Response(status=202, headers={"Warning": _warning("0xB304: the workitem is already CANCELED")})
    if task.ups_state != "SCHEDULED":
        _refuse(409, "0xC311" if task.ups_state == "COMPLETED" else "0xC312",
                f"the workitem is {task.ups_state}; only its performer can end it")
    done = services().archive.reading.cancel_scheduled(task.id)
    audit.record(domain.AUDIT_STATE, study_instance_uid=done.study_instance_uid, patient_id=done.patient_id,
                 patient_name=done.patient_name, detail=f"task {done.id} workitem {uid}: canceled (UPS-RS)")
    return Response(status=202)
