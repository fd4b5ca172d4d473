"""The web side: Flask application factory, auth, HTML views, DICOMweb, rendering.

Extension points for new web features (study browser, viewer, DICOMweb):

- Blueprints: add one import and one ``app.register_blueprint`` line in
  ``web/app.py: register_blueprints``. A blueprint for API clients
  (HTTP Basic or bearer token as well as the session) is wrapped in
  ``auth.api_blueprint(bp)``; everything under ``/dicom-web`` is treated as API.
- Auth is on by default for every endpoint. ``@auth.public`` opens a view to
  anonymous users; ``@auth.requires(Permission.X)`` demands a permission
  (VIEW, EXPORT, SEND, DELETE, ADMIN from archive/users.py). ``auth.current_user()``
  is the signed-in ``Account``.
- CSRF: every POST/PUT/PATCH/DELETE from a session needs the token: forms use
  ``{{ csrf_field() }}``, JavaScript uses ``DSM.fetch`` (static/js/app.js), which
  sends the X-CSRF-Token header. Basic/bearer API calls need none.
- Audit: ``web.audit.record(AuditAction.X, study_instance_uid=..., detail=...)``,
  and ``web.audit.record_view(study_uid)`` for views (deduplicated per user and
  study for a few minutes).
- Templates extend ``base.html`` (blocks: title, content, scripts); text comes
  from ``_("key")`` with keys in i18n/<lang>/*.json (add your own file per area).
- Static files: static/css, static/js; no inline script (CSP script-src 'self').
- Services: ``web.services.services()`` gives settings, archive, users, audit,
  activity, statistics and peers for the current app.
"""
