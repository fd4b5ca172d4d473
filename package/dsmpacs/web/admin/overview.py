"""Storage use: totals from the index, free space, volume received per day."""
from __future__ import annotations

import shutil
import threading
import time

from flask import redirect, render_template, url_for

from dsmpacs.archive.integrity import corrupt_instances
from dsmpacs.archive.verification import verification_state
from dsmpacs.web.admin import bp
from dsmpacs.web.charts import bar_chart
from dsmpacs.web.i18n import _
from dsmpacs.web.services import services

CORRUPT_LISTED = 100
_TOTALS_SECONDS = 60           # totals scan the instance table: not on every page load
_cache: dict[str, tuple[float, object]] = {}
_lock = threading.Lock()


def _cached(key: str, compute):
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < _TOTALS_SECONDS:
            return hit[1]
    value = compute()
    with _lock:
        _cache[key] = (now, value)
    return value


@bp.route("/")
def index():
    return redirect(url_for("admin.storage"))


@bp.route("/storage")
def storage():
    svc = services()
    totals = _cached(f"totals:{id(svc)}", svc.statistics.totals)
    days = svc.statistics.received_per_day(30)
    try:
        disk = shutil.disk_usage(svc.archive.storage.root)
    except OSError:
        disk = None
    labels = [d.day.strftime("%m-%d") for d in days]
    instances_chart = bar_chart([d.instances for d in days], labels, _("admin.storage.instances_per_day"),
                                value_format=str)
    volume_chart = bar_chart([d.bytes / 2**20 for d in days], labels, _("admin.storage.mib_per_day"),
                             value_format=lambda v: f"{v:.1f}")
    return render_template("admin/storage.html", totals=totals, disk=disk, days=days,
                           corrupt=corrupt_instances(svc.archive.index, CORRUPT_LISTED),
                           verification=verification_state(svc.archive.index),
                           verify_period_days=svc.settings.verify_period_days,
                           instances_chart=instances_chart, volume_chart=volume_chart,
                           min_free=svc.archive.storage.min_free_bytes,
                           root=str(svc.archive.storage.root))
