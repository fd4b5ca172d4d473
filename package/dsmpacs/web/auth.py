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

The session cookie holds only a random session id; the session itself is a
row in the index (archive/sessions.py), so signing out, a password or role
change and disabling the account end it at once on every web process, and a
copied cookie stops working. No session state is cached in memory: one
indexed read per request, the same as the account look-up it replaces.

Sign-in may need a second step (a TOTP code, or enrolment when the role
requires TOTP): until it is done the session's stage is not ``ok``, the
request has no user, and every page but the step's own redirects there.

``reauth_required`` guards dangerous actions: the user confirms their
identity again (password or code) unless they did so within
web_reauth_minutes. The decision is archive/sessions.py's; API clients
(Basic, bearer token) are not asked, they send their credentials anyway.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from functools import wraps
from typing import Callable

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import Forbidden, TooManyRequests

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.sessions import STAGE_OK, STAGE_TOTP, SessionState
from dsmpacs.archive.users import Account, Permission, username_key
from dsmpacs.web import audit, share_session
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
SESSION_KEY = "sid"


def current_session() -> SessionState | None:
    """The request's server-side session (also while sign-in is half done)."""
    return g.get("web_session")


def start_session(account: Account, stage: str = STAGE_OK) -> None:
    """A fresh session (new CSRF token too: nothing from before the login survives)."""
    old = session.get(SESSION_KEY)
    if old:
        services().sessions.end(old)
    session.clear()
    session[SESSION_KEY] = services().sessions.create(
        account, stage=stage, address=client_address(),
        user_agent=request.headers.get("User-Agent", ""))


def end_session() -> None:
    sid = session.get(SESSION_KEY)
    if sid:
        services().sessions.end(sid)
    session.clear()


def keep_session_after_password_change(account: Account) -> None:
    """The user changed their own password: this session goes on, all others end."""
    state = current_session()
    if state is not None:
        services().sessions.adopt_epoch(state.id, account)


def check_throttle(username: str) -> None:
    """429 when this name from this address, or this address, failed too often lately."""
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


def login_failed(username: str, how: str, action: AuditAction = AuditAction.LOGIN_FAILED) -> None:
    burst = services().throttle.failure(username_key(username), client_address())
    audit.record(action, actor=username[:64] or "-", outcome="failed", detail=how)
    log.warning("failed %s login for %r from %s", how, username, client_address())
    if burst:
        limit = services().settings.login_alert_per_minute
        # Once per process every few minutes: the alert, not the burst, goes to the index.
        audit.record_once(("login-burst",), AuditAction.SECURITY_ALERT, actor="-", outcome="alert",
                          detail=f"more than {limit} failed logins within a minute")
        log.error("security alert: more than %d failed logins within a minute", limit)


def login_succeeded(account: Account, how: str) -> None:
    services().throttle.success(username_key(account.username), client_address())
    audit.record(AuditAction.LOGIN, actor=account.username, detail=how, role=account.role.value)


# --- re-authentication before dangerous actions ---------------------------------------
def reauthenticated() -> bool:
    if g.get("auth_method") in ("basic", "bearer"):
        return True
    state = current_session()
    return state is not None and state.reauthenticated()


def reauth_required(view: Callable) -> Callable:
    """Ask for the password or a TOTP code again unless given within web_reauth_minutes.

    A browser gets a confirmation page that carries the original form along and,
    once confirmed, re-sends it to the same URL (HTTP 307 keeps method and body).
    """
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not reauthenticated():
            return reauth_prompt()
        return view(*args, **kwargs)
    return wrapper


def reauth_prompt(error: str | None = None, status: int = 403):
    if not wants_html() and request.mimetype not in ("application/x-www-form-urlencoded",
                                                     "multipart/form-data"):
        response = jsonify(error="re-authentication required")
        response.status_code = status
        return response
    carried = [(k, v) for k, v in request.form.items(multi=True)
               if k not in ("csrf_token", "reauth_password", "reauth_code", "reauth_target",
                            "reauth_method")]
    target = request.form.get("reauth_target") or request.path
    method = request.form.get("reauth_method") or request.method
    state = current_session()
    has_totp = state is not None and services().second_factor.enrolled(state.account.id)
    return current_app.make_response((render_template(
        "reauth.html", carried=carried, target=target, method=method, error=error,
        has_totp=has_totp), status))


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


def _session_state() -> SessionState | None:
    sid = session.get(SESSION_KEY)
    if not sid:
        return None
    state = services().sessions.resolve(str(sid))
    if state is None:
        session.clear()
    return state


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
        svc.throttle.success(username_key(username), client_address())
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
    g.web_session = None
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
    state = g.web_session = _session_state()
    if state is not None and state.signed_in:
        g.user = state.account
        g.auth_method = "session"
        return None
    # A share link's session: one study's read-only viewer and nothing else.
    verdict = share_session.admit(bool(getattr(view, _PUBLIC, False)))
    if verdict is share_session.Verdict.ADMITTED:
        return None
    if verdict is share_session.Verdict.REFUSED:
        return unauthorized(api=api)
    if getattr(view, _PUBLIC, False):
        return None
    if state is not None and wants_html():
        # Password given, second step due: nothing else until it is done.
        step = "security.totp_step" if state.stage == STAGE_TOTP else "security.enrol"
        return redirect(url_for(step, next=request.full_path.rstrip("?")))
    return unauthorized(api=api)


def init_app(app: Flask) -> None:
    app.extensions["dsmpacs.basic_cache"] = _BasicCache()
    app.before_request(_authenticate)
    app.jinja_env.globals.update(current_user=current_user, Permission=Permission,
                                 current_session=current_session, current_share=share_session.current_share)
