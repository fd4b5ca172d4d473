"""The CI scripts stay POSIX sh that shellcheck passes: .ci/run runs on a bare
Debian 12 machine, where nothing but /bin/sh (dash) may be assumed. So do the scripts
it calls to build and enter the DSM tests' Debian roots (tests/dsm/container)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.peers import require

ROOT = Path(__file__).resolve().parent.parent


def test_ci_scripts_pass_shellcheck_as_posix_sh():
    shellcheck = shutil.which("shellcheck")
    require(shellcheck is not None, "shellcheck is not installed (apt-get install shellcheck)")
    scripts = sorted((ROOT / ".ci").iterdir())
    assert {p.name for p in scripts} >= {"run", "mariadb"}
    scripts += sorted((ROOT / "tests" / "dsm" / "container").glob("*.sh"))
    assert {p.name for p in scripts} >= {"build-roots.sh", "enter.sh"}
    for script in scripts:
        assert script.read_text().startswith("#!/bin/sh\n"), script
    done = subprocess.run([shellcheck, "--shell=sh", *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
