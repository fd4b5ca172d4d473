"""Debian 12 roots for the DSM tests, built by build-roots.sh without any container image.

`.ci/run` builds them before `make test` (a few minutes the first time, then cached);
the tests that need one require it, so under CI=true a missing root fails.
"""
from __future__ import annotations

import os
from pathlib import Path

from tests.peers import require

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("DSMPACS_CI_CACHE", "/var/cache/dsmpacs-ci"))


def cached_root(arch: str) -> Path:
    """The root for `arch` (amd64 or arm64) under the cache folder, or skip (fail in CI)."""
    root = CACHE / f"debian12-{arch}"
    require((root / ".dsmpacs-root").is_file(),
            f"no Debian 12 {arch} root in {CACHE}: run tests/dsm/container/build-roots.sh as root "
            "(.ci/run does)")
    return root
