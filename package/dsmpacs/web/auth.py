"""Who is asking: a session cookie for the UI; HTTP Basic or a bearer token for API clients.

Secure by default: every endpoint needs a signed-in user unless its view is
marked ``@public``; a forgotten decorator cannot expose patient data. Anonymous
requests get 401: a login page for a browser, JSON with a WWW-Authenticate
challenge for an API client. Everything under ``/dicom-web`` is API even
before its blueprint exists.

UI pages accept only the session. API blueprints (``api_blueprint(bp)``) also
accept ``Authorization: Basic`` and ``Authorization: Bearer <token>``. A
verified Basic password is remembered for a few minutes (keyed by an HMAC
under the app's secret key), because DICOMweb clients send it on every
request and scrypt is deliberately slow.

The session cookie holds the user id, the account's epoch (bumped when the
password changes or the account is disabled, which ends every session) and
the login time (a login lasts web_session_hours at most).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from functools import wraps
from typing import Callable

from flask import Blueprint, Flask, current_app, g, jsonify, render_template, request, session
from werkzeug.exceptions import Forbidden, TooManyRequests

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.users import Account, Permission, username_key
from dsmpacs.web import audit
from dsmpacs.web.services import services

log = logging.getLogger(__name__)

REALM = "DSM PACS"
API_PATH_PREFIX = "/dicom-web"
_PUBLIC = "_dsmpacs_public"
_API = "dsmpacs_api"
BASIC_CACHE_SECONDS = 300


# --- decorators and helpers for views ---------------------------------------------
def public(view: Callable) -> Callable:
    """Open a view to anonymous users (login page, health, language switch)."""
    setattr(view, _PUBLIC, True)
    return view


def api_blueprint(bp: Blueprint) -> Blueprint:
    """Let a blueprint's routes accept HTTP Basic and bearer tokens besides the session."""
    setattr(bp, _API, True)
    return bp


def current_user() -> Account | None:
    return g.get("user")


def requires(permission: Permission) -> Callable:
    """403 unless the signed-in user's role grants ``permission``."""
    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            require(permission)
            return view(*args, **kwargs)
        return wrapper
    return decorate


def require(permission: Permission) -> None:
    """The same check inside a view (for example for one button of a page)."""
    user = current_user()
    if user is None or not user.can(permission):
        log.warning("%s refused %s on %s %s", user.username if user else "anonymous",
                    permission.value, request.method, request.path)
        audit.record_refusal(403, f"needs permission {permission.value}")
        raise Forbidden(permission.value)


def client_address() -> str:
    return request.remote_addr or ""


def is_api_request() -> bool:
    if request.path == API_PATH_PREFIX or request.path.startswith(API_PATH_PREFIX + "/"):
        return True
    bp = current_app.blueprints.get(request.blueprint or "")
    return bool(bp is not None and getattr(bp, _API, False))


def wants_html() -> bool:
    """True for a browser page load (text/html asked for by name, not through */*)."""
    accept = request.accept_mimetypes
    return any(value == "text/html" for value, _q in accept) or \
        request.headers.get("Sec-Fetch-Mode") == "navigate"


# --- signing in and out ------------------------------------------------------------
def start_session(account: Account) -> None:
    """A fresh session (new CSRF token too: nothing from before the login survives)."""
    session.clear()
    session["uid"] = account.id
    session["epoch"] = account.epoch
    session["iat"] = int(time.time())


def end_session() -> None:
    session.clear()


def check_throttle(username: str) -> None:
    """429 when this name or this address has failed too often lately."""
    wait = services().throttle.retry_after(username_key(username), client_address())
    if wait > 0:
        # One audit row per name and address while it lasts, not one per attempt:
        # a refused burst must not become a burst of index writes.
        audit.record_once(("throttled", username_key(username), client_address()),
                          AuditAction.LOGIN_THROTTLED, actor=username[:64] or "-", outcome="refused")
        log.warning("login for %r from %s throttled for %.0f s", username, client_address(), wait)
        exc = TooManyRequests()
        exc.retry_after = int(wait) + 1
        raise exc


def login_failed(username: str, how: str) -> None:
    services().throttle.failure(username_key(username), client_address())
    audit.record(AuditAction.LOGIN_FAILED, actor=username[:64] or "-", outcome="failed", detail=how)
    log.warning("failed %s login for %r from %s", how, username, client_address())


def login_succeeded(account: Account, how: str) -> None:
    services().throttle.success(username_key(account.username))
    audit.record(AuditAction.LOGIN, actor=account.username, detail=how, role=account.role.value)


# --- resolving the user of a request -----------------------------------------------
class _BasicCache:
    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[bytes, tuple[int, int, float]] = {}

    def key(self, username: str, password: str) -> bytes:
        secret = current_app.secret_key
        secret = secret.encode() if isinstance(secret, str) else secret
        return hmac.new(secret, f"{username}\0{password}".encode("utf-8"), hashlib.sha256).digest()

    def get(self, key: bytes) -> tuple[int, int] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[2] < time.monotonic():
                self._entries.pop(key, None)
                return None
            return entry[0], entry[1]

    def put(self, key: bytes, account: Account) -> None:
        with self._lock:
            if len(self._entries) > 1000:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[2] >= now}
            self._entries[key] = (account.id, account.epoch, time.monotonic() + BASIC_CACHE_SECONDS)


def _session_user() -> Account | None:
    uid = session.get("uid")
    if uid is None:
        return None
    lifetime = services().settings.web_session_hours * 3600
    account = services().users.get(int(uid))
    if (account is None or account.disabled or account.epoch != session.get("epoch")
            or time.time() - float(session.get("iat", 0)) > lifetime):
        end_session()
        return None
    return account


def _authorization_user() -> Account | None:
    """The user of an Authorization header; raises 429 when throttled. None: bad credentials."""
    auth = request.authorization
    if auth is None:
        return None
    svc = services()
    if auth.type == "basic":
        username, password = auth.username or "", auth.password or ""
        cache: _BasicCache = current_app.extensions["dsmpacs.basic_cache"]
        key = cache.key(username, password)
        hit = cache.get(key)
        if hit is not None:
            account = svc.users.get(hit[0])
            if account is not None and not account.disabled and account.epoch == hit[1]:
                return account
        check_throttle(username)
        account = svc.users.authenticate(username, password)
        if account is None:
            login_failed(username, "http-basic")
            return None
        svc.throttle.success(username_key(username))
        cache.put(key, account)
        return account
    if auth.type == "bearer" and auth.token:
        check_throttle("")
        account = svc.users.authenticate_token(auth.token)
        if account is None:
            login_failed("", "bearer-token")
        return account
    return None


def unauthorized(api: bool | None = None):
    """The 401 response: login page for a browser, JSON plus a challenge otherwise."""
    api = is_api_request() if api is None else api
    audit.record_refusal(401, "not signed in" if request.authorization is None else "wrong credentials")
    if wants_html():
        nxt = request.full_path if request.method == "GET" else "/"
        response = current_app.make_response(
            (render_template("login.html", next=nxt.rstrip("?"), error=None), 401))
        # Not "Basic": a browser would then prompt for and cache credentials,
        # and send them cross-site without a CSRF token.
        response.headers["WWW-Authenticate"] = f'Session realm="{REALM}"'
        return response
    response = jsonify(error="authentication required")
    response.status_code = 401
    if api and not request.headers.get("Sec-Fetch-Site"):
        response.headers.add("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        response.headers.add("WWW-Authenticate", f'Bearer realm="{REALM}"')
    else:
        response.headers["WWW-Authenticate"] = f'Session realm="{REALM}"'
    return response


def _authenticate():
    g.user = None
    g.auth_method = None
    if request.endpoint == "static":
        return None                  # CSS and JS: public, and no index look-up per file
    api = is_api_request()
    view = current_app.view_functions.get(request.endpoint or "")
    if api and request.authorization is not None:
        g.user = _authorization_user()
        if g.user is None:
            return unauthorized(api=True)     # wrong credentials never fall back to a session
        g.auth_method = request.authorization.type
        return None
    g.user = _session_user()
    if g.user is not None:
        g.auth_method = "session"
        return None
    if getattr(view, _PUBLIC, False):
        return None
    return unauthorized(api=api)


def init_app(app: Flask) -> None:
    app.extensions["dsmpacs.basic_cache"] = _BasicCache()
    app.before_request(_authenticate)
    app.jinja_env.globals.update(current_user=current_user, Permission=Permission)
