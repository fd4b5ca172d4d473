"""How `make test` spreads the suite over xdist workers (registered in conftest.py).

`--dist loadfile` keeps a module's tests on one worker: they share module-scoped
servers and corpora. The fake-NAS tests (tests/dsm) share one package system user
and one session-wide build, so they must run one at a time; they used to run in a
second pytest after the rest, which left a core idle for five minutes. Here the whole
of tests/dsm is one "file": one worker runs it while the other works through the
rest. It is collected first (tests/dsm sorts before tests/test_*), so the longest
unit starts first.

xdist's own way to say this, `--dist loadgroup` with `xdist_group` marks, does not
group anything under pytest 9.2 (pytest-dev/pytest-xdist#1386: the mark is passed
by rewriting the node id, which pytest no longer reads). This uses the documented
`pytest_xdist_make_scheduler` hook and LoadFileScheduling's own extension point,
`_split_scope`; tests/test_scheduling.py pins the xdist version it was written for.
"""
from __future__ import annotations

WRITTEN_FOR = "3.8.0"
ONE_UNIT = ("tests/dsm/",)


def scope_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    for prefix in ONE_UNIT:
        if module.startswith(prefix):
            return prefix
    return module


def make_scheduler(config, log):
    """The scheduler for `--dist loadfile`; None (xdist's own) for any other mode."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SuiteScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return SuiteScheduling(config, log)
