"""In CI (CI=true) every skip is a failure, whatever raised it.

A real pytest runs in a subprocess on generated test files, with tests/conftest.py
loaded as a plugin, once with CI=true and once without. Removing or weakening
the hooks in tests/conftest.py makes this test fail.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SKIPPING = '''
import pytest

from tests.peers import require


@pytest.fixture
def missing_peer():
    require(False, "reason-from-fixture")


def test_calls_skip():
    pytest.skip("reason-from-call")


@pytest.mark.skipif(True, reason="reason-from-skipif")
def test_skipif_mark():
    pass


@pytest.mark.skip(reason="reason-from-skip-mark")
def test_skip_mark():
    pass


def test_importorskip():
    pytest.importorskip("no_such_module_for_ci_test")


def test_fixture_skips(missing_peer):
    pass


def test_require_in_body():
    require(False, "reason-from-require")


def test_passes():
    pass


@pytest.mark.xfail(reason="an expected failure is not a skip", strict=True)
def test_expected_failure():
    raise AssertionError
'''

MODULE_SKIP = '''
import pytest

pytest.importorskip("no_such_module_at_collection")


def test_never_collected():
    pass
'''

REASONS = ["reason-from-fixture", "reason-from-call", "reason-from-skipif", "reason-from-skip-mark",
           "no_such_module_for_ci_test", "reason-from-require", "no_such_module_at_collection"]


def run_pytest(folder: Path, ci: str | None, target: str = ".") -> tuple[int, dict[str, int], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CI"))}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(ROOT)
    # -c /dev/null: none of the project's addopts; -p tests.conftest: the hooks under test.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(folder), "-p", "tests.conftest",
         "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly", "-rA", str(folder / target)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    summary = re.findall(r"^=+ (.*) in [0-9.]+s(?: \([0-9:]+\))? =+$", done.stdout, re.M)
    assert summary, out
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary[-1])}
    return done.returncode, counts, out


@pytest.mark.slow          # three pytest processes: about 1.5 s of CPU each
def test_every_kind_of_skip_fails_in_ci_and_only_in_ci(tmp_path):
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)

    code, counts, out = run_pytest(tmp_path, ci=None)
    assert code == 0, out
    assert counts == {"passed": 1, "skipped": 7, "xfailed": 1}, out

    code, counts, out = run_pytest(tmp_path, ci="true", target="test_skipping.py")
    assert code == 1, out
    # Marks and fixtures skip at setup, so pytest counts those among the errors.
    assert counts == {"failed": 3, "errors": 3, "passed": 1, "xfailed": 1}, out
    for reason in REASONS[:-1]:
        assert re.search(rf"skipped in CI, which counts as a failure \(CI=true\): .*{reason}", out), \
            (reason, out)

    # A module skipped while collecting: an error that interrupts the run (exit code 2).
    code, counts, out = run_pytest(tmp_path, ci="true", target="test_module_skip.py")
    assert code == 2 and counts == {"error": 1}, out
    assert re.search(rf"skipped in CI, which counts as a failure \(CI=true\): .*{REASONS[-1]}", out), out
