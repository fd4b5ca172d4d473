"""The access policy for DICOM peers: shown with where each value comes from,
and changed by writing config.toml (effective at the next start)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields

from flask import redirect, render_template, request, url_for

from dsmpacs import configfile
from dsmpacs.archive.audit import AuditAction
from dsmpacs.settings import Settings, SettingsError
from dsmpacs.web import audit
from dsmpacs.web.admin import bp
from dsmpacs.web.i18n import _, notify
from dsmpacs.web.services import services

log = logging.getLogger(__name__)

POLICY_SETTINGS = ("unknown_ae_may_store", "strict_ae_check", "check_called_ae", "check_peer_host")


@dataclass(frozen=True)
class PolicyValue:
    name: str
    running: bool
    saved: bool               # what the next start will use (as far as the file decides)
    source: str               # default, config.toml, environment, command line
    doc: str

    @property
    def editable(self) -> bool:
        return self.source in ("default", "config.toml")

    @property
    def pending(self) -> bool:
        return self.editable and self.saved != self.running


def policy_values() -> list[PolicyValue]:
    settings = services().settings
    at_start = services().config_at_start
    now = configfile.read_values(settings)
    meta = {f.name: f for f in fields(Settings)}
    out = []
    for name in POLICY_SETTINGS:
        source = configfile.source_of(settings, name, at_start)
        saved = bool(now.get(name, meta[name].default)) if source in ("default", "config.toml") \
            else getattr(settings, name)
        out.append(PolicyValue(name, getattr(settings, name), saved, source, meta[name].metadata["doc"]))
    return out


@bp.route("/policy", methods=["GET", "POST"])
def policy():
    values = policy_values()
    error = None
    if request.method == "POST":
        changes = {v.name: request.form.get(v.name) == "on" for v in values if v.editable}
        changes = {k: v for k, v in changes.items() if v != next(p.saved for p in values if p.name == k)}
        if changes:
            try:
                path = configfile.update(services().settings, changes)
            except (SettingsError, OSError) as exc:
                log.error("saving the access policy: %s", exc)
                error = _("admin.policy.write_failed")
            else:
                audit.record(AuditAction.SETTINGS_CHANGE,
                             detail=", ".join(f"{k} = {str(v).lower()}" for k, v in changes.items()))
                notify("admin.policy.saved", "ok", path=str(path))
                return redirect(url_for("admin.policy"))
        else:
            notify("admin.policy.unchanged", "info")
            return redirect(url_for("admin.policy"))
    return render_template("admin/policy.html", values=values, error=error,
                           config_path=str(configfile.config_path(services().settings)),
                           peers=len(services().peers.list())), (400 if error else 200)
