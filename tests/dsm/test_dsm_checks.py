"""The checks Package Center makes before and while installing, played by the fake NAS
(tests/dsm/harness.py) against the built package: arch, DSM version and dependency
versions, a resource worker whose provider is missing (no MariaDB10 package), a port
another service registered, and a downgrade.

Kept cheap (a few seconds): every check here happens before postinst builds the
environment, so the one installation stops there (the full lifecycle is
test_lifecycle.py's).

To see the checks fail on another build, point DSM_CHECKS_SPK at its x86_64 .spk (and
DSM_CHECKS_PREVIOUS at a lower build of it for the downgrade):
`DSM_CHECKS_SPK=dist/dsmpacs-x86_64-0.1.0-0001.spk pytest -n0 tests/dsm/test_dsm_checks.py`.
"""
from __future__ import annotations

import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from dsmpacs.dsm import wizard as w
from tests.dsm.harness import DSMError

PASSWORD = "Angio-suite-2026"
SABNZBD = ('[sabnzbd]\ntitle="SABnzbd"\ndesc="SABnzbd"\nport_forward="yes"\n'
           'dst.ports="8080/tcp"\n\n[sabnzbd_https]\ntitle="SABnzbd HTTPS"\ndst.ports="9090/tcp"\n')


@pytest.fixture(scope="module")
def spks(request) -> dict[str, Path]:
    if os.environ.get("DSM_CHECKS_SPK"):
        current = Path(os.environ["DSM_CHECKS_SPK"])
        built = list(current.parent.glob(current.name.replace("-x86_64-", "-*-")))
        previous = Path(os.environ.get("DSM_CHECKS_PREVIOUS", current))
    else:
        builds = request.getfixturevalue("spk_builds")
        current, previous, built = builds["current"], builds["previous"], builds["all"]
    armv8 = next((p for p in built if "-armv8-" in p.name), current)
    return {"current": current, "previous": previous, "armv8": armv8}


def with_info(spk: Path, out: Path, **changes: str) -> Path:
    """A copy of the package with INFO fields changed (package.tgz, and so the checksum, kept)."""
    work = out / "unpacked"
    shutil.rmtree(work, ignore_errors=True)
    with tarfile.open(spk) as tar:
        tar.extractall(work, filter="tar")
    info = (work / "INFO").read_text()
    for key, value in changes.items():
        info = re.sub(rf'(?m)^{key}=".*"$', f'{key}="{value}"', info)
    (work / "INFO").write_text(info)
    copy = out / f"changed-{spk.name}"
    with tarfile.open(copy, "w") as tar:
        for item in sorted(work.iterdir()):
            tar.add(item, arcname=item.name)
    return copy


def test_package_center_refuses_arch_dsm_version_and_dependency(spks, fake_dsm_factory, tmp_path):
    dsm = fake_dsm_factory()          # an x86_64 NAS on DSM 7.2, python311 3.11, no MariaDB10
    # A NAS without MariaDB 10 takes the package: it declares no mariadb10-db worker.
    assert dsm.unpack(spks["current"]).name == "dsmpacs"
    if spks["armv8"] != spks["current"]:
        with pytest.raises(DSMError, match="not compatible"):
            dsm.unpack(spks["armv8"])
    with pytest.raises(DSMError, match="needs DSM 7.3-80000 or later"):
        dsm.unpack(with_info(spks["current"], tmp_path, os_min_ver="7.3-80000"))
    with pytest.raises(DSMError, match=r"needs python311 >= 3\.12"):
        dsm.unpack(with_info(spks["current"], tmp_path, install_dep_packages="python311>=3.12"))


def test_preinst_refuses_a_registered_port_and_a_missing_mariadb10_with_the_reason(
        spks, fake_dsm_factory):
    """Before anything is unpacked, in the administrator's language (Traditional Chinese)."""
    dsm = fake_dsm_factory(lang="cht")
    dsm.register_service("sabnzbd", SABNZBD)
    base = {w.ADMIN_PASSWORD: PASSWORD, w.ADMIN_PASSWORD_CONFIRM: PASSWORD}
    with pytest.raises(DSMError) as refused:
        dsm.install(spks["current"], {**base, w.WEB_PORT: "8080"}, start=False)
    assert w.message("port_registered", "cht", label=w.message("web_port_label", "cht"), port="8080",
                     service="SABnzbd", file="/usr/local/etc/services.d/sabnzbd.sc") in str(refused.value)
    with pytest.raises(DSMError) as refused:
        dsm.install(spks["current"], {**base, w.DB_SQLITE: False, w.DB_MARIADB_CREATE: True,
                                      w.MARIADB_PASSWORD: "Pw-12345", w.MARIADB_ROOT_PASSWORD: "Root-1234"},
                    start=False)
    assert w.message("mariadb_missing", "cht", socket=w.MARIADB10_SOCKET) in str(refused.value)
    assert list(dsm.app_dir("target", "dsmpacs").iterdir()) == []
    assert sorted(p.name for p in dsm.services_d.iterdir()) == ["sabnzbd.sc"]


def test_the_wizards_ports_are_registered_from_the_start_and_a_downgrade_is_refused(
        spks, fake_dsm_factory):
    """SABnzbd holds 8080 on this NAS (which has MariaDB 10, so only the ports decide). DSM's
    port-config worker registers the package's .sc before postinst: it must already name the
    wizard's ports, or the worker refuses the install over a port the wizard did not choose."""
    dsm = fake_dsm_factory(mariadb10=True)
    dsm.register_service("sabnzbd", SABNZBD)
    answers = {w.ADMIN_PASSWORD: PASSWORD, w.ADMIN_PASSWORD_CONFIRM: PASSWORD,
               w.DICOM_PORT: "10105", w.WEB_PORT: "10190", w.DICOM_TLS_PORT: ""}
    dsm.install(spks["current"], answers, until="postinst")
    ports = re.findall(r'dst\.ports="(\d+)/tcp"', dsm.registered[0])
    assert ports == ["10105", "10190"]
    # A lower build over the installed one: Package Center refuses it, nothing changes.
    installed = dsm.installed.version
    with pytest.raises(DSMError, match="a newer version"):
        dsm.upgrade(spks["previous"])
    assert dsm.installed.version == installed
