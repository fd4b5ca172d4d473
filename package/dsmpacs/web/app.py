"""The Flask application factory: one app per web process, built from Settings
and the process's Archive (see dsmpacs/app.py, the composition root)."""
from __future__ import annotations

import logging
from datetime import timedelta

import peewee
from flask import Flask, g, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from playhouse.pool import MaxConnectionsExceeded

from dsmpacs.archive import Archive
from dsmpacs.settings import Settings
from dsmpacs.web import auth, cors, csrf, errors, filters, i18n, proxy, secret, security, uploads
from dsmpacs.web.services import EXTENSION, Services

log = logging.getLogger(__name__)

SESSION_COOKIE = "dsmpacs_session"   # DSM and other apps share the host's cookie jar
MAX_BODY_BYTES = 16 * 2**20


class SessionInterface(SecureCookieSessionInterface):
    """Signed cookie sessions, marked Secure when the setting says so or the
    request came over HTTPS (directly, or through web_trusted_proxy)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or (has_request_context() and request.is_secure))

    def open_session(self, app: Flask, request):
        # Flask's, minus building the signing serializer for a request without the
        # cookie (DICOMweb clients with HTTP Basic or a token: most rendered frames).
        # The raw header first: parsing it into request.cookies costs more than the test.
        name = self.get_cookie_name(app)
        if app.secret_key and (name not in request.environ.get("HTTP_COOKIE", "")
                               or not request.cookies.get(name)):
            return self.session_class()
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask):
        # Built once per key set rather than twice a request (open and save): it holds
        # nothing about a request.
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        cached = self.__dict__.get("_serializer")
        if cached is None or cached[0] != keys:
            cached = (keys, super().get_signing_serializer(app))
            self._serializer = cached
        return cached[1]


def create_app(settings: Settings, archive: Archive) -> Flask:
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(
        SECRET_KEY=secret.load_or_create(settings.data_dir),
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web_secure_cookies,
        # Bounds the signature's age; the session's own lifetime is its index row's.
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.web_session_hours),
        MAX_FORM_MEMORY_SIZE=1 * 2**20,
        # Any request body: forms and JSON are small. STOW-RS raises its own request's
        # limit (stow_max_mb) once the caller is known to be allowed to store.
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    app.json.ensure_ascii = False
    app.session_interface = SessionInterface()
    app.extensions[EXTENSION] = Services.build(settings, archive)

    hold_index_connection(app, archive)
    # Order matters: a CORS preflight is answered before anyone is asked who they are
    # (cors), who is asking (auth) before whether the form is genuine (csrf) or the
    # body acceptable (uploads). None of them reads a body that is not a small form.
    cors.init_app(app, settings)
    auth.init_app(app)
    csrf.init_app(app)
    uploads.init_app(app)
    i18n.init_app(app)
    filters.init_app(app)
    security.init_app(app)
    errors.init_app(app)
    register_blueprints(app)
    # Outermost: the client's address and scheme are settled before anything reads them.
    app.wsgi_app = proxy.TrustedProxy(app.wsgi_app, settings.web_trusted_proxy)
    return app


def hold_index_connection(app: Flask, archive: Archive) -> None:
    """One pooled index connection for the whole request instead of one per query
    (archive/database.py ``session`` reuses an open one). A rendered frame asks five
    queries (its account, scope, grants, the study's institution, the instance): five
    trips through the pool's lock, and on MariaDB five pings (the pool checks a
    connection by pinging it when handing it out). Autocommit: holding it holds no
    lock or snapshot; it is held until the request's teardown (a streamed answer's
    end). Registered first, so that authentication uses it too."""
    db = archive.index.db

    def open_connection():
        if request.endpoint == "static" or not db.is_closed():
            return
        try:
            db.connect()
        except (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded):
            # Unreachable: the first query tries again and answers 503 (IndexUnavailable).
            # The pool used up (web_threads above its size): the queries take turns as before.
            return
        g.index_connection = True

    def close_connection(_exc):
        if g.pop("index_connection", False) and not db.is_closed() and not db.in_transaction():
            db.close()

    app.before_request(open_connection)
    app.teardown_request(close_connection)


def register_blueprints(app: Flask) -> None:
    """Every blueprint of the web app. Add yours here: one import, one line."""
    from dsmpacs.web import (
        account_security,
        admin,
        browse,
        dicomweb,
        home,
        introspection,
        login,
        ohif,
        orders,
        reading,
        shares,
    )
    from dsmpacs.web.reports import bp as reports_bp

    app.register_blueprint(login.bp)
    account_security.init_app(app)              # second factor, re-auth, sessions (docs/web.md)
    app.register_blueprint(home.bp)
    app.register_blueprint(introspection.bp)
    app.register_blueprint(admin.bp, url_prefix="/admin")
    app.register_blueprint(browse.bp)          # study browser and viewer (docs/viewer.md)
    app.register_blueprint(orders.bp, url_prefix="/orders")   # registration (docs/workflow.md)
    app.register_blueprint(reading.bp, url_prefix="/reading")  # reading worklist (docs/workflow.md)
    app.register_blueprint(reports_bp, url_prefix="/reports")  # reports (docs/workflow.md)
    app.register_blueprint(shares.bp)          # share links, notifications (docs/workflow.md)
    dicomweb.register(app)                      # /dicom-web and /wado (docs/dicomweb.md)
    ohif.register(app)                          # OHIF at /ohif/ when ohif_dir is set (docs/viewer.md)
