"""What every DICOMweb view shares: the blueprints, errors, URLs and instance look-up."""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Response, abort, g, request

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.retrieve import RetrieveError, RetrieveKeys, StoredInstance, select_instances
from dsmpacs.archive.uids import is_valid_uid
from dsmpacs.web import auth
from dsmpacs.web.services import services

log = logging.getLogger("dsmpacs.web.dicomweb")

PREFIX = "/dicom-web"
bp = auth.api_blueprint(Blueprint("dicomweb", __name__, url_prefix=PREFIX))
# WADO-URI lives at /wado, outside /dicom-web, but is an API all the same.
uri_bp = auth.api_blueprint(Blueprint("wado_uri", __name__))


def fail(code: int, message: str):
    """End the request with an HTTP error whose body says why (and log it)."""
    g.dicomweb_error = message
    abort(code, description=message)


CORRUPT = 410            # Gone: the stored copy is damaged; nothing intact can be served
PARTIAL = 206            # some selected instances were left out (PS3.18 Partial Content)


def _log_errors(response: Response) -> Response:
    omitted = g.get("dicomweb_omitted")
    if omitted and response.status_code == 200 and response.mimetype in (
            "multipart/related", "application/dicom+json"):
        # A study or series minus its corrupt instances: say so in the status and a
        # Warning header rather than answer as if it were complete.
        response.status_code = PARTIAL
        response.headers["Warning"] = (f'299 {request.host.split(":")[0]} "{len(omitted)} instance(s) '
                                       f'omitted, corrupt in storage: {", ".join(omitted[:5])}'
                                       f'{" ..." if len(omitted) > 5 else ""}"')
        log.warning("DICOMweb %s %s: %d corrupt instance(s) omitted", request.method,
                    request.full_path.rstrip("?"), len(omitted))
    if response.status_code >= 400:
        user = auth.current_user()
        log.warning("DICOMweb %s %s from %s (%s) -> %d %s", request.method, request.full_path.rstrip("?"),
                    request.remote_addr, user.username if user else "anonymous",
                    response.status_code, g.get("dicomweb_error", ""))
    return response


bp.after_request(_log_errors)
uri_bp.after_request(_log_errors)


def _guard():
    # Imported here: web/scoping imports this module's ``fail`` for STOW-RS.
    from dsmpacs.web.scoping import guard_study_arguments
    return guard_study_arguments()


# Every study named in a path or query must be in the caller's scope: 404 otherwise.
bp.before_request(_guard)
uri_bp.before_request(_guard)


def base_url() -> str:
    """Absolute URL of /dicom-web for this request, on the host the client used.

    dicomweb-client sends ``Host`` without the port; then, unless a reverse proxy
    (web_trusted_proxy) answers for us, the port this server listens on is added,
    or its BulkDataURIs and RetrieveURLs would point at port 80."""
    host = request.host
    port = request.environ.get("SERVER_PORT", "")
    default = "443" if request.scheme == "https" else "80"
    if (":" not in host.rsplit("]", 1)[-1] and port and port != default
            and not services().settings.web_trusted_proxy):
        host = f"{host}:{port}"
    return f"{request.scheme}://{host}{request.script_root}{PREFIX}"


def study_url(base: str, study: str) -> str:
    return f"{base}/studies/{study}"


def series_url(base: str, study: str, series: str) -> str:
    return f"{base}/studies/{study}/series/{series}"


def instance_url(base: str, study: str, series: str, instance: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{instance}"


def check_uids(*uids: str) -> None:
    for uid in uids:
        if not is_valid_uid(uid):
            fail(400, f"{uid[:80]!r} is not a valid UID")


def select(study: str, series: str | None = None, instance: str | None = None) -> list[StoredInstance]:
    """The stored instances of a study, series or instance; 404 when there are none."""
    check_uids(*(u for u in (study, series, instance) if u is not None))
    if instance is not None:
        keys = RetrieveKeys(Level.IMAGE, study_instance_uids=(study,), series_instance_uids=(series,),
                            sop_instance_uids=(instance,))
    elif series is not None:
        keys = RetrieveKeys(Level.SERIES, study_instance_uids=(study,), series_instance_uids=(series,))
    else:
        keys = RetrieveKeys(Level.STUDY, study_instance_uids=(study,))
    try:
        found = select_instances(services().archive.index, keys)
    except RetrieveError as exc:
        fail(400, str(exc))
    if not found:
        what = "instance" if instance else "series" if series else "study"
        fail(404, f"no such {what}")
    return servable(found)


def servable(found: list[StoredInstance]) -> list[StoredInstance]:
    """The instances that may be served (archive/integrity.py decides). The others are
    remembered for the response's 206 and Warning; 410 when none is left."""
    archive = services().archive
    good, omitted, reasons = [], [], []
    for item in found:
        reason = archive.refusal(item, "WADO")
        if reason is None:
            good.append(item)
        else:
            omitted.append(item.sop_instance_uid)
            reasons.append(reason)
    if not good:
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        fail(CORRUPT, f"{reasons[0]}{more}; it is not served until an administrator restores it "
                      "from a backup")
    g.dicomweb_omitted = omitted
    return good


def file_of(instance: StoredInstance) -> Path:
    return services().archive.storage.path(instance.path)
