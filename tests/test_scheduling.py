"""The suite's xdist scheduling (tests/scheduling.py): pinned to the xdist it was
written for, and checked by a real two-worker run of a small suite laid out like ours."""
from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from tests import scheduling

ROOT = Path(__file__).resolve().parent.parent


def test_written_for_the_installed_and_pinned_xdist():
    assert importlib.metadata.version("pytest-xdist") == scheduling.WRITTEN_FOR
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().split()
                if "==" in line)
    assert pins["pytest-xdist"] == scheduling.WRITTEN_FOR


def test_scope_is_the_module_except_the_fake_nas_which_is_one_unit():
    assert scheduling.scope_of("tests/test_x.py::test_a[1]") == "tests/test_x.py"
    assert scheduling.scope_of("tests/dsm/test_a.py::test_b") == scheduling.scope_of("tests/dsm/test_c.py::t")
    assert scheduling.scope_of("tests/dsm/test_a.py::t") != scheduling.scope_of("tests/test_a.py::t")


def test_two_workers_keep_tests_dsm_on_one_worker_and_modules_together(tmp_path):
    """A real `pytest -n 2 --dist loadfile` with our hook: every tests/dsm test on one
    worker, each other module on one worker, and both workers used."""
    tests = tmp_path / "tests"
    (tests / "dsm").mkdir(parents=True)
    (tests / "__init__.py").write_text("")
    (tests / "dsm" / "__init__.py").write_text("")
    (tests / "conftest.py").write_text(
        "import sys\nsys.path.insert(0, %r)\n"
        "from tests_scheduling_under_test import make_scheduler\n"
        "def pytest_xdist_make_scheduler(config, log):\n"
        "    return make_scheduler(config, log)\n" % str(tmp_path / "lib"))
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "tests_scheduling_under_test.py").write_text(
        (ROOT / "tests" / "scheduling.py").read_text())
    body = "import time\n" + "".join(f"def test_{i}():\n    time.sleep(0.05)\n" for i in range(4))
    for name in ("dsm/test_one.py", "dsm/test_two.py", "dsm/test_three.py",
                 "test_a.py", "test_b.py", "test_c.py", "test_d.py"):
        (tests / name).write_text(body)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "xdist", "-n", "2", "--dist", "loadfile",
                           "-v", "-p", "no:cacheprovider", "tests"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    workers: dict[str, set[str]] = {}
    for gw, nodeid in re.findall(r"^\[(gw\d)\] .*?PASSED (\S+)", done.stdout, re.M):
        workers.setdefault(scheduling.scope_of(nodeid), set()).add(gw)
    assert len(workers) == 5, done.stdout
    assert all(len(gws) == 1 for gws in workers.values()), workers
    assert len(set().union(*workers.values())) == 2, workers
