"""The benchmarks' plumbing: they import, parse their options, pair rounds and read versions.

No timing is asserted here: benchmarks are run by `make bench`, never by the suite.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import common, find, ingest, mpr, scale, viewer, web
from tests.peers import require


def test_rotation_puts_every_target_in_every_position():
    targets = ["ours", "orthanc", "storescp"]
    orders = [common.rotated(targets, r) for r in range(3)]
    assert orders[0] == targets
    for position in range(3):
        assert sorted(order[position] for order in orders) == sorted(targets)
    assert common.rotated(targets, 3) == targets


def test_ratios_pair_round_by_round_not_median_by_median():
    peer, ours = [3.0, 1.0, 2.0], [1.0, 1.0, 4.0]
    assert common.ratios(peer, ours) == [3.0, 1.0, 0.5]
    # The median of the medians would say 2.00x; the median of the pairs says 1.00x.
    assert common.ratio_cell(peer, ours) == "1.00x (0.50–3.00)"
    with pytest.raises(ValueError):
        common.ratios([1.0, 2.0], [1.0])


@pytest.mark.parametrize("module", [ingest, find, scale, web, viewer, mpr])
def test_every_section_takes_quick(module):
    args = module.build_parser().parse_args(["--quick"])
    assert args.quick is True
    assert module.build_parser().parse_args([]).quick is False
    assert module.QUICK != module.FULL


def test_quick_sizes_are_smaller_than_full():
    assert ingest.QUICK.small < ingest.FULL.small and ingest.QUICK.big_frames < ingest.FULL.big_frames
    assert find.QUICK.instances < find.FULL.instances
    assert scale.QUICK.instances < scale.FULL.instances and scale.QUICK.add < scale.FULL.add
    assert web.QUICK.studies < web.FULL.studies


def test_the_disk_counter_sees_a_file_reach_the_disk():
    """bench/scale.py's disk KB: the block device's own counter rises by at least what
    was fsynced (other writers may add to it); a filesystem with no block device says
    None rather than a number."""
    common.WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=common.WORK) as tmp:   # the checkout's disk
        path = Path(tmp)
        before = common.device_written(path)
        assert before is not None, "no /proc/diskstats line for the checkout's disk"
        fd = os.open(path / "data", os.O_CREAT | os.O_WRONLY)
        try:
            os.write(fd, os.urandom(4 << 20))
            os.fsync(fd)
        finally:
            os.close(fd)
        assert common.device_written(path) - before >= 4 << 20
    assert common.device_written(Path("/proc")) is None


def test_round_directories_stay_until_the_benchmark_is_done():
    """A round's files are not removed before the next round starts (that slowed the
    next round's file creation: common.RoundDirs); all go together at the end, and a
    benchmark that failed leaves them to read."""
    with common.RoundDirs("test-round-dirs") as dirs:
        first = dirs.fresh("DsmPacs-small-0")
        (first / "stored.dcm").write_bytes(b"x")
        second = dirs.fresh("DsmPacs-small-1")
        assert (first / "stored.dcm").is_file(), "the first round's files went before the second round"
        assert second.is_dir() and not any(second.iterdir())
    assert not dirs.root.exists()
    with pytest.raises(RuntimeError), common.RoundDirs("test-round-dirs") as failed:
        kept = failed.fresh("Orthanc-ct-0")
        raise RuntimeError("a round failed")
    assert kept.is_dir()
    shutil.rmtree(failed.root)


def test_bench_main_parses_sections_and_refuses_unknown_ones():
    args = bench_main.build_parser().parse_args(["--quick", "find"])
    assert args.quick and args.sections == ["find"]
    with pytest.raises(SystemExit) as exc:
        bench_main.main(["no-such-section"])
    assert exc.value.code == 2


def test_versions_are_read_from_the_tools():
    require(shutil.which("storescp") is not None, "dcmtk storescp not installed")
    assert re.fullmatch(r"dcmtk storescp \d+\.\d+\.\d+\S*", common.dcmtk_version("storescp"))
    assert "unknown" in common.dcmtk_version("/nonexistent/storescp")
    ours = common.our_version()
    assert re.search(r"pynetdicom \d", ours) and re.search(r"pydicom \d", ours)


def test_viewer_report_pairs_orthanc_with_ours_and_says_what_it_cannot_measure():
    links = list(viewer.LINKS)
    ours = {"first": 400.0, "preview": 2.0, "exact": 100.0, "fps": 15.0}
    results = {(viewer.OURS, n): [dict(ours), dict(ours, first=200.0)] for n in links}
    results.update({(viewer.THEIRS, n): [{"first": 800.0, "preview": 40.0}, {"first": 200.0, "preview": 40.0}]
                    for n in links})
    text = viewer.report(results, [viewer.OURS, viewer.THEIRS], 2, 60, 2.0, quick=True)
    # Round by round: 800/400 and 200/200, so the median of the pairs is 1.50x.
    assert "1.50x (1.00–2.00)" in text
    assert "20.00x (20.00–20.00)" in text
    assert "n/a (no play control)" in text and "n/a (renders in the browser only)" in text
    alone = viewer.report({(viewer.OURS, n): [ours] for n in links}, [viewer.OURS], 1, 60, 2.0, quick=True)
    assert "No peer viewer measured" in alone and "Orthanc / ours" not in alone


def test_ingest_inproc_alternates_two_checkouts_and_pairs_their_rounds(capsys):
    """bench/ingest_inproc.py stores the corpus in a child process per round, the two
    checkouts taking turns, and pairs the figures round by round (this checkout as both
    sides here; which is faster is the tool's output, not this test's)."""
    from bench import ingest_inproc

    assert ingest_inproc.main([str(common.ROOT), str(common.ROOT), "--quick", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    rounds = re.findall(r"round (\d) (before|after): wall [\d.]+, thread user [\d.]+ \+ system [\d.]+, "
                        r"process [\d.]+ ms an instance", out)
    assert rounds == [("0", "before"), ("0", "after"), ("1", "after"), ("1", "before")], out
    assert re.search(r"^after/before, round by round: wall_ms [\d.]+ \(", out, re.M), out


def test_ingest_ab_pairs_two_daemons_rounds_with_their_user_time_apart(capsys):
    """bench/ingest_ab.py pushes the corpus into a daemon of each checkout in turn
    (this checkout as both sides here) and prints, per round and over the rounds, the
    wall times, the CPU per instance and the user CPU alone, which a change to our
    Python moves while the kernel's share moves with the disk."""
    from bench import ingest_ab

    require(shutil.which("storescu") is not None, "dcmtk storescu not installed")
    assert ingest_ab.main([str(common.ROOT), str(common.ROOT), "--quick", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    rounds = re.findall(r"round (\d): wall before [\d.]+ s, after [\d.]+ s \(after/before [\d.]+\); "
                        r"CPU ([\d.]+) / ([\d.]+) ms an instance, user ([\d.]+) / ([\d.]+)", out)
    assert [r[0] for r in rounds] == ["0", "1"], out
    for _round, cpu_before, cpu_after, user_before, user_after in rounds:
        assert 0 < float(user_before) <= float(cpu_before) and 0 < float(user_after) <= float(cpu_after), out
    assert re.search(r"; user CPU after/before [\d.]+ \(", out), out


def test_ingest_ir_counts_a_daemon_s_instructions_per_instance(capsys):
    """bench/ingest_ir.py runs two daemons of this checkout under callgrind, one
    receiving three files from storescu and one fifteen, and prints their difference per
    instance: millions of instructions for a small instance, where a start-up that did
    not cancel out would leave hundreds (a daemon's start-up is billions) and a
    difference taken the wrong way round a negative count."""
    from bench import ingest_ir

    require(shutil.which("storescu") is not None, "dcmtk storescu not installed")
    require(shutil.which("valgrind") is not None, "valgrind not installed")
    assert ingest_ir.main(["--quick"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"^this checkout: ([\d.]+) \(", out, re.M)
    assert found, out
    assert 1.0 < float(found.group(1)) < 50.0, out


def test_ingest_budget_charges_every_stage_of_a_real_push(capsys):
    """bench/ingest_budget.py wraps each stage in the daemon it starts and prints what a
    storescu push cost each: every stage was reached, the per-instance ones once an
    instance, and the nesting adds up (a stage never costs more than the one it is in)."""
    from bench import ingest_budget

    require(shutil.which("storescu") is not None, "dcmtk storescu not installed")
    assert ingest_budget.main(["--quick", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    lines = {label: (float(micros), float(calls), depth) for micros, calls, indent, label in
             re.findall(r"^ *([\d.]+) +([\d.]+)  ( *)(.+?)  \[", out, re.M)
             for depth in [len(indent) // 2]}
    assert list(lines) == [label for _d, label, _m, _p in ingest_budget.STAGES], out
    for label in ("spool file created", "spool staged", "Ingest.store", "header parsed", "index written",
                  "the instance's statements", "answer sent"):
        assert lines[label][1] == 1.0, (label, out)
    # Small instances wake no pool thread (the storing thread fsyncs and hashes them);
    # every other stage is reached.
    pool = ingest_budget.STAGES[-1][1]
    assert lines.pop(pool)[:2] == (0.0, 0.0), out
    assert all(micros > 0 for micros, _calls, _depth in lines.values()), out
    # A stage costs no more than the one it is in, except directly under the idle
    # association thread's reading (inline.serve_idle): the DUL thread reads and runs
    # the state machine too (association set-up, a request that arrives while the
    # association thread is still answering the last), and no line counts that thread.
    reading = next(label for _d, label, _m, path in ingest_budget.STAGES if path.endswith("serve_idle"))
    parents: list[tuple[float, int, str]] = []
    for label, (micros, _calls, depth) in lines.items():
        parents = [p for p in parents if p[1] < depth]
        if parents and parents[-1][2] != reading:
            assert micros <= parents[-1][0], (label, out)
        parents.append((micros, depth, label))
    assert re.search(r"^daemon CPU, every thread: \d+ µs an instance", out, re.M), out
