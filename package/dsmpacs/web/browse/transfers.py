"""Send a study to a registered AE from the web UI, in a background thread,
with a progress endpoint the study page polls.

The push itself is the one `dsmpacs send --study` uses (dicom/sender.py):
original bytes where the peer accepts the stored transfer syntax, a lossless
conversion where it does not. Jobs live in this web process's memory: they
are short, and their outcome is kept in the association log and the audit
trail, which outlive a restart.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from flask import abort, current_app, jsonify, request

from dsmpacs.archive.activity import OUTGOING, AssociationSummary
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.institutions import destination_refusal
from dsmpacs.archive.models import utcnow
from dsmpacs.archive.retrieve import RetrieveKeys, select_instances
from dsmpacs.archive.users import Permission
from dsmpacs.web import audit, auth
from dsmpacs.web.browse import bp
from dsmpacs.web.services import Services, services

log = logging.getLogger(__name__)

KEEP_FINISHED_SECONDS = 3600
_lock = threading.Lock()           # guards the counters a job's thread updates
MAX_JOBS = 200


@dataclass
class Job:
    id: str
    study_instance_uid: str
    peer: str
    owner: str
    total: int
    sent: int = 0
    failed: int = 0
    converted: int = 0
    state: str = "running"           # running, done, failed
    message: str = ""
    reason: str = ""                 # AssociationFailed.code when the push failed; the page's text
    finished_at: float | None = None
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"id": self.id, "study": self.study_instance_uid, "peer": self.peer, "total": self.total,
                "sent": self.sent, "failed": self.failed, "converted": self.converted, "state": self.state,
                "message": self.message, "reason": self.reason, "failures": self.failures[:20]}


class Jobs:
    def __init__(self):
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}

    def add(self, job: Job) -> None:
        with self.lock:
            now = time.monotonic()
            self.jobs = {k: j for k, j in self.jobs.items()
                         if j.finished_at is None or now - j.finished_at < KEEP_FINISHED_SECONDS}
            if len(self.jobs) >= MAX_JOBS:
                abort(503, "too many transfers running")
            self.jobs[job.id] = job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)


def _jobs() -> Jobs:
    return current_app.extensions.setdefault("dsmpacs.transfers", Jobs())


def _run(svc: Services, job: Job, peer, instances, address: str) -> None:
    from dsmpacs.dicom.scu import AssociationFailed, client_ae
    from dsmpacs.dicom.sender import push

    summary = AssociationSummary(OUTGOING, calling_ae=svc.settings.ae_title, called_ae=peer.ae_title,
                                 peer=f"{peer.host}:{peer.port}", services={"C-STORE"})

    def progress(instance, result) -> None:
        with _lock:
            if result.category == "failure":
                job.failed += 1
                job.failures.append(f"{instance.sop_instance_uid}: {result.message or hex(result.status)}")
            else:
                job.sent += 1
                job.converted += int(result.converted)
    state, message, reason = "failed", "", ""
    try:
        push(client_ae(svc.settings), svc.archive.storage, peer, instances, progress,
             refuse=svc.archive.refusal)
        state = "done" if job.failed == 0 else "failed"
    except (AssociationFailed, OSError, RuntimeError, ValueError) as exc:
        message, reason = str(exc), getattr(exc, "code", "other")
        summary.outcome = "failed"
    except Exception as exc:  # a thread must not die silently with the job left "running"
        log.exception("sending study %s to %s", job.study_instance_uid, peer)
        message, reason = str(exc), "other"
        summary.outcome = "failed"
    finally:
        summary.ended_at = utcnow()
        summary.completed, summary.failed = job.sent, job.total - job.sent
        summary.detail = f"web send of study {job.study_instance_uid} by {job.owner}"[:255]
        try:
            svc.activity.record(summary)
            svc.audit.record(job.owner, AuditAction.SEND, study_instance_uid=job.study_instance_uid,
                             detail=f"to {job.peer}: sent {job.sent} ({job.converted} converted), "
                                    f"failed {job.total - job.sent}{': ' + message if message else ''}",
                             address=address, outcome="ok" if state == "done" else "failed")
        except Exception:
            log.exception("could not record the outcome of sending %s", job.study_instance_uid)
        # Finished only once recorded: whoever polls sees the audit row with the result.
        with _lock:
            job.state, job.message, job.reason, job.finished_at = state, message, reason, time.monotonic()
        log.info("web send %s of %s to %s: %s, %d/%d sent", job.id, job.study_instance_uid, job.peer,
                 state, job.sent, job.total)



@bp.route("/studies/<study_uid>/send", methods=["POST"])
@auth.requires(Permission.SEND)
def send(study_uid: str):
    svc = services()
    name = request.form.get("peer", "") or (request.get_json(silent=True) or {}).get("peer", "")
    peer = svc.peers.get(str(name))
    if peer is None or not peer.is_move_destination:
        abort(400, "choose a registered remote AE that may receive")
    instances = select_instances(svc.archive.index, RetrieveKeys.study(study_uid)) \
        if _valid_uid(study_uid) else []
    if not instances:
        abort(404)
    # A remote AE bound to a hospital receives only that hospital's studies
    # (archive/institutions.py, as C-MOVE does).
    refusal = destination_refusal(svc.archive.index, peer.ae_title, [study_uid], peer_name=peer.name)
    if refusal is not None:
        audit.record_refusal(403, refusal)
        return jsonify(error="destination", message=f"cannot send to {peer.name}: {refusal}"), 403
    user = auth.current_user()
    job = Job(uuid.uuid4().hex, study_uid, peer.name, user.username, len(instances))
    _jobs().add(job)
    audit.record(AuditAction.SEND, study_instance_uid=study_uid, outcome="started",
                 detail=f"to {peer.name} ({peer}): {len(instances)} instances")
    threading.Thread(target=_run, args=(svc, job, peer, instances, request.remote_addr or ""),
                     name=f"send-{job.id[:8]}", daemon=True).start()
    return jsonify(job.as_dict()), 202


def _valid_uid(uid: str) -> bool:
    from dsmpacs.archive.uids import is_valid_uid
    return is_valid_uid(uid)


@bp.route("/transfers/<job_id>")
@auth.requires(Permission.SEND)
def transfer(job_id: str):
    job = _jobs().get(job_id)
    user = auth.current_user()
    if job is None or (job.owner != user.username and not user.is_admin):
        abort(404)
    with _lock:
        return jsonify(job.as_dict())
