"""System notices (notices.py) and the watchdog's back-off (supervisor.Watchdog)."""
from __future__ import annotations

import stat
import sys
import time
from datetime import datetime, timedelta, timezone

from dsmpacs import notices
from dsmpacs.settings import Settings
from dsmpacs.supervisor import Watchdog


def test_back_off_doubles_to_its_cap_and_gives_up_after_n_crashes_in_the_window():
    dog = Watchdog(max_crashes=6, window=600, first_delay=1, max_delay=4)
    delays = [dog.crashed("dicom", t) for t in (0, 10, 20, 30, 40)]
    assert delays == [1, 2, 4, 4, 4]
    assert dog.crashed("dicom", 50) is None                  # the 6th within 10 minutes
    # Crashes far apart never add up: one a quarter of an hour keeps being restarted at once.
    calm = Watchdog(max_crashes=2, window=600, first_delay=1, max_delay=60)
    assert [calm.crashed("web", t) for t in (0, 900, 1800, 2700)] == [1, 1, 1, 1]


def test_storage_below_the_warning_is_a_notice_and_above_it_none(tmp_path):
    low = notices.storage_notice(Settings(data_dir=tmp_path, storage_warn_mb=10**9), tmp_path, 0)
    assert low is not None and low.kind == "storage-low" and low.params["warn_mb"] == 10**9
    assert str(tmp_path) in low.text()
    assert notices.storage_notice(Settings(data_dir=tmp_path, storage_warn_mb=0), tmp_path, 0) is None
    # min_free_mb above the warning: warned there too, and said to be refusing.
    refusing = notices.storage_notice(Settings(data_dir=tmp_path, storage_warn_mb=0), tmp_path, 2**62)
    assert refusing is not None and refusing.params["refusing"] is True


def test_an_expiring_server_certificate_is_a_notice(tmp_path):
    from dsmpacs.tls import TlsFiles, authority

    settings = Settings(data_dir=tmp_path, dicom_tls_port=2762, cert_warn_days=30)
    authority.init(TlsFiles.of(settings), ["127.0.0.1"])
    assert notices.certificate_notice(settings) is None          # new: valid for long
    not_after = authority.describe(TlsFiles.of(settings))
    later = datetime.now(timezone.utc) + timedelta(days=10_000)
    expired = notices.certificate_notice(settings, now=later)
    assert expired is not None and expired.params["expired"] is True, not_after
    # No TLS listener uses it: nothing to say.
    assert notices.certificate_notice(Settings(data_dir=tmp_path), now=later) is None


def test_each_notice_is_told_once_to_the_log_and_the_notify_command(tmp_path):
    record = tmp_path / "told.txt"
    script = tmp_path / "notify.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write('|'.join(sys.argv[2:]) + '\\n')\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    settings = Settings(data_dir=tmp_path, notify_command=f"{sys.executable} {script} {record}")
    low = notices.Notice("verification-failed", "corrupt:2", {"count": 2})
    monitor = notices.Monitor(settings)
    assert monitor.check([low]) == [low]
    assert notices.Monitor(settings).check([low]) == []          # a restart does not repeat it
    assert record.read_text() == f"DSM PACS|{low.text()}\n"
    line = notices.log_path(settings).read_text()
    assert line.count("\n") == 1 and "verification-failed: 2 stored instance(s) failed" in line
    # Gone, then back: told again.
    assert monitor.check([]) == []
    assert monitor.check([low]) == [low]
    assert record.read_text().count("\n") == 2


def test_the_watchdog_record_becomes_notices(tmp_path):
    settings = Settings(data_dir=tmp_path)
    now = time.time()
    notices.write_services(settings, {
        "dicom": {"restarts": 2, "since": now - 60, "last_crash": now - 5, "last_status": "SIGKILL",
                  "crashes_in_window": 2, "window": 600, "gave_up": False},
        "web": {"restarts": 0, "since": now - 60, "last_crash": now - 1, "last_status": "1",
                "crashes_in_window": 5, "window": 600, "gave_up": True}})
    found = {n.kind: n for n in notices.service_notices(settings, now)}
    assert found["service-crashed"].params["restarts"] == 2
    assert "exit status SIGKILL" in found["service-crashed"].text()
    assert "no longer restarted" in found["service-gave-up"].text()
    # A day later the restarted service is no longer news; the one given up still is.
    later = notices.service_notices(settings, now + notices.CRASH_SHOWN_SECONDS + 1)
    assert [n.kind for n in later] == ["service-gave-up"]


def test_admin_pages_show_storage_and_certificate_notices_in_the_readers_language(tmp_path):
    """Every administration page carries the notices that hold now (SQLite only: the index
    plays no part)."""
    from dataclasses import replace

    from dsmpacs.archive import Archive
    from dsmpacs.tls import TlsFiles, authority
    from dsmpacs.web.app import create_app
    from tests.webclient import client_as

    # Warn below more space than any disk has; warn about a certificate valid for years.
    settings = Settings(data_dir=tmp_path, min_free_mb=0, require_totp_roles="",
                        storage_warn_mb=10**9, dicom_tls_port=2762, cert_warn_days=3650)
    archive = Archive(settings)
    archive.open(upgrade=True)
    authority.init(TlsFiles.of(settings), ["127.0.0.1"])
    app = create_app(settings, archive)
    app.testing = True
    admin = app.test_client()
    client_as(admin, archive, "admin")
    page = admin.get("/admin/users", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert 'data-system-notice="storage-low"' in page and "存储空间即将用尽" in page
    assert 'data-system-notice="certificate-expiring"' in page and "TLS 服务器证书" in page
    english = admin.get("/admin/storage", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "The storage filesystem is filling up" in english

    quiet = create_app(replace(settings, storage_warn_mb=0, cert_warn_days=0), archive)
    quiet.testing = True
    calm = quiet.test_client()
    client_as(calm, archive, "admin", "admin2")
    assert "data-system-notice" not in calm.get("/admin/storage").get_data(as_text=True)
    archive.close()
