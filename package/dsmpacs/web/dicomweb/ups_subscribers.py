"""UPS-RS subscriptions (PS3.18 11.10 Subscribe, 11.11 Unsubscribe, 11.12 Suspend Global
Subscription): thin views over archive/ups_subscriptions.py. The event reports go out
over the WebSocket channel of web/upsws.py (setting ``ups_ws_port``), whose URL the
Subscribe answer names in Content-Location.

- ``POST /workitems/{uid}/subscribers/{AE}{?deletionlock}``: one workitem (404 when the
  caller cannot see it);
- ``POST /workitems/1.2.840.10008.5.1.4.34.5/subscribers/{AE}``: every workitem, existing
  and future (each AE still receives only what the connected user may see);
- ``DELETE`` of either: unsubscribe (the global one ends every subscription of the AE);
- ``POST /workitems/1.2.840.10008.5.1.4.34.5/subscribers/{AE}/suspend``.

The Filtered Worklist Subscription (…34.5.1) is refused with 403, as PS3.18 asks.
"""
from __future__ import annotations

from flask import Response, request

from dsmpacs.archive.reading import OPEN
from dsmpacs.archive.ups_subscriptions import FILTERED_GLOBAL, GLOBAL, Subscriptions
from dsmpacs.archive.users import Permission
from dsmpacs.settings import valid_ae_title
from dsmpacs.web import audit, auth
from dsmpacs.web.dicomweb.common import bp, fail
from dsmpacs.web.dicomweb.ups import _visible_task, _warning
from dsmpacs.web.services import services

AUDIT_SUBSCRIBE = "ups-subscribe"
AUDIT_UNSUBSCRIBE = "ups-unsubscribe"


def _subscriptions() -> Subscriptions:
    return Subscriptions(services().archive.index)


def _target(workitem: str, aetitle: str) -> str:
    """The UID subscribed to, after checking the AE title and that the caller may see it."""
    if not valid_ae_title(aetitle):
        fail(400, f"{aetitle[:20]!r} is not an AE title")
    if workitem == FILTERED_GLOBAL:
        response = Response("Filtered Worklist Subscriptions are not supported\n", status=403,
                            mimetype="text/plain")
        response.headers["Warning"] = _warning("Filtered Worklist Subscriptions are not supported.")
        from flask import abort
        abort(response)
    if workitem != GLOBAL:
        _visible_task(workitem)
    return workitem


def channel_url(aetitle: str) -> str:
    """The WebSocket URL of the AE's notification channel, on the host the client used."""
    settings = services().settings
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    scheme = "wss" if settings.web_tls else "ws"
    return f"{scheme}://{host}:{settings.ups_ws_port}/ws/subscribers/{aetitle}"


@bp.route("/workitems/<workitem>/subscribers/<aetitle>", methods=["POST"])
@auth.requires(Permission.VIEW)
def subscribe(workitem: str, aetitle: str):
    uid = _target(workitem, aetitle)
    if not services().settings.ups_ws_port:
        fail(403, "event notifications are off on this server (ups_ws_port is 0)")
    lock = request.args.get("deletionlock", "false").lower() == "true"
    user = auth.current_user()
    _subscriptions().subscribe(aetitle, uid, deletion_lock=lock, owner=user.username if user else "")
    audit.record(AUDIT_SUBSCRIBE, detail=f"UPS-RS: {aetitle} subscribed to {uid}"
                 + (" with deletion lock" if lock else ""))
    # Reading tasks are never deleted, so a deletion lock is always granted.
    return Response(status=201, headers={"Content-Location": channel_url(aetitle)})


@bp.route("/workitems/<workitem>/subscribers/<aetitle>", methods=["DELETE"])
@auth.requires(Permission.VIEW)
def unsubscribe(workitem: str, aetitle: str):
    uid = _target(workitem, aetitle)
    if not _subscriptions().unsubscribe(aetitle, uid):
        fail(404, f"{aetitle} has no subscription to {uid}")
    audit.record(AUDIT_UNSUBSCRIBE, detail=f"UPS-RS: {aetitle} unsubscribed from {uid}")
    return Response(status=200)


@bp.route("/workitems/<workitem>/subscribers/<aetitle>/suspend", methods=["POST"])
@auth.requires(Permission.VIEW)
def suspend(workitem: str, aetitle: str):
    if workitem != GLOBAL:
        _target(workitem, aetitle)
        fail(400, "only the Worklist Subscription (1.2.840.10008.5.1.4.34.5) can be suspended")
    _target(workitem, aetitle)
    if not _subscriptions().suspend(aetitle, OPEN):
        fail(404, f"{aetitle} has no Worklist Subscription")
    audit.record(AUDIT_UNSUBSCRIBE, detail=f"UPS-RS: {aetitle} suspended its Worklist Subscription")
    return Response(status=200)
