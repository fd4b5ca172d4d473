"""archive/commits.py: what a store is told, and which of its rows stay, on the real index.

A batch of one (every store of a lone sender) runs without a savepoint; these pin
that its outcomes are those of a store in a larger batch: failed inserts leave no
row, inserts that met another process's row run again, and a failed fsync commits
nothing. Batches of several are exercised by tests/test_durability_order.py.
"""
from __future__ import annotations

import time

import pytest

from dsmpacs.archive.commits import RetryLater
from dsmpacs.archive.index import InstanceExists
from dsmpacs.archive.models import Patient


def _rows(archive, key: str) -> int:
    with archive.index.read():
        return Patient.select().where(Patient.patient_key == key).count()


def _run(archive, work, before_commit=None):
    return archive.index.commits.run(work, before_commit, time.monotonic() + 10)


def test_a_lone_store_whose_inserts_fail_is_told_so_and_leaves_no_row(archive):
    def work():
        Patient.create(patient_key="inserted-then-failed", patient_name="A^B")
        raise InstanceExists("already archived")

    with pytest.raises(InstanceExists):
        _run(archive, work)
    assert _rows(archive, "inserted-then-failed") == 0
    _run(archive, lambda: Patient.create(patient_key="next", patient_name="C^D"))
    assert _rows(archive, "next") == 1


def test_a_lone_store_that_met_another_process_s_row_runs_again_and_commits_once(archive):
    attempts = []

    def work():
        attempts.append(1)
        # Unique: had the first attempt's row stayed, the second would fail.
        Patient.create(patient_key="retried", patient_name="E^F")
        if len(attempts) == 1:
            raise RetryLater("the study was created meanwhile")

    _run(archive, work)
    assert len(attempts) == 2
    assert _rows(archive, "retried") == 1


def test_a_lone_store_whose_fsync_failed_commits_nothing_and_is_told(archive):
    def disk_failed():
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        _run(archive, lambda: Patient.create(patient_key="not-durable", patient_name="G^H"), disk_failed)
    assert _rows(archive, "not-durable") == 0
