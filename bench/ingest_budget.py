"""Where the DICOM daemon's CPU goes for each stored instance, stage by stage.

    .venv/bin/python -m bench.ingest_budget [--corpus small|ct|dsa|parallel] [--rounds 3]
        [--quick]

Not a section of ``python -m bench``: a tool for choosing what to change on the store
path. storescu pushes the corpus into our DICOM daemon, started fresh and empty for
each round as bench/ingest.py starts it, but through this module (``--serve``), which
wraps each function of ``STAGES`` before the daemon's command line runs. Every call of
a wrapped function adds the CPU time its own thread spent inside it
(``time.thread_time_ns``: user and system time, not the time it waited for the GIL, a
lock, the disk or the network) to its stage; stages nest, and each line counts what
the lines indented under it count too (a function reached from another thread as well,
such as the DUL thread's own reads while an association is set up, is counted there
too). At exit the daemon writes the sums to a file, and the tool prints, per stage,
the median over the rounds of its microseconds and calls per instance, beside the
daemon's whole CPU per instance (``/proc``, every thread).

"spool file created" is mostly the kernel allocating an inode. On an ext4 without a
journal (this VM's disk) that allocation steps over every inode freed in the last one
to six minutes, so it costs several times more right after many files were removed
(a benchmark's directories, this tool's included, when it ends): 70 µs an instance
on a quiet disk and 487 µs within a minute of removing 6,000 files, with four
senders. Leave a few minutes after such a removal, or compare only rounds that had
the same.

Why not a sampling profiler: without ``--gil``, py-spy charges a thread waiting for
the GIL or the disk to the line it waits on; with ``--gil`` it slowed the same push
from about 4.1 s to 7.3 s (at 47d5a45) and gave pynetdicom's ``decode_msg`` 21% of
its samples, where that function's own thread CPU was 13% of the daemon's.

The wrappers cost CPU too (two clock reads a call, about 40 calls an instance): the
daemon's CPU per instance is about a tenth higher under this tool than under
bench/ingest_ab.py. Compare stages with each other, and one checkout with another
under this tool, not with the ingest benchmarks' figures.
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

# (depth, label, module, attribute path): what each stage wraps, in the order printed.
STAGES = (
    (0, "association threads, everything", "pynetdicom.association", "Association._run_reactor"),
    (1, "reading requests (the DUL's work)", "dsmpacs.dicom.engine.inline", "serve_idle"),
    (2, "PDUs read and decoded", "pynetdicom.dul", "DULServiceProvider._is_transport_event"),
    (2, "state machine actions", "pynetdicom.fsm", "StateMachine.do_action"),
    (3, "DIMSE message assembly", "pynetdicom.dimse", "DIMSEServiceProvider.receive_primitive"),
    (4, "P-DATA into the message", "pynetdicom.dimse_messages", "DIMSEMessage.decode_msg"),
    (5, "command set decoded", "pynetdicom.dimse_messages", "decode"),
    (5, "spool file created", "dsmpacs.archive.storage", "Storage.spool"),
    (5, "File Meta written", "pynetdicom.dimse_messages", "write_file_meta_info"),
    (5, "spool writes", "dsmpacs.archive.storage", "SpoolWriter.write"),
    (5, "spool flushes", "dsmpacs.archive.storage", "SpoolWriter.flush"),
    (4, "message into its primitive", "pynetdicom.dimse_messages", "DIMSEMessage.message_to_primitive"),
    (1, "serving requests", "pynetdicom.association", "Association._serve_request"),
    (2, "spool staged", "dsmpacs.archive.storage", "SpoolWriter.staged"),
    (2, "Ingest.store", "dsmpacs.archive.ingest", "Ingest.store"),
    (3, "free space checked", "dsmpacs.archive.storage", "Storage.check_writable"),
    (3, "published (renamed)", "dsmpacs.archive.storage", "Storage.publish_first"),
    (3, "header parsed", "dsmpacs.archive.ingest", "_header_of"),
    (3, "structure checked", "dsmpacs.archive.ingest", "dataset_problem"),
    (3, "index values extracted", "dsmpacs.archive.ingest", "extract"),
    (3, "file and directory fsynced", "dsmpacs.archive.storage", "SyncOnWait.result"),
    (3, "index written", "dsmpacs.archive.index", "Index.add_instance"),
    (4, "busy timeout set and restored", "dsmpacs.archive.index", "set_busy_timeout"),
    (4, "BEGIN", "peewee", "SqliteDatabase.begin"),
    (4, "inside the transaction", "dsmpacs.archive.commits", "GroupCommit._transaction"),
    (5, "the instance's statements", "dsmpacs.archive.index", "Index._add"),
    (4, "COMMIT", "peewee", "Database.commit"),
    (2, "answer sent", "dsmpacs.dicom.engine.respond", "send_response"),
    # A small instance wakes no pool thread: its fsyncs are the storing thread's
    # (archive/storage.py SyncOnWait) and its bytes are hashed there too.
    (0, "pool tasks (a large file's hashing, rare fsyncs)", "concurrent.futures.thread", "_WorkItem.run"),
)


# --- the daemon's side ---------------------------------------------------------------
def _wrap(sums: dict, label: str, module: str, path: str) -> None:
    owner = importlib.import_module(module)
    *outer, name = path.split(".")
    for part in outer:
        owner = getattr(owner, part)
    declared = vars(owner).get(name) if isinstance(owner, type) else None
    original = getattr(owner, name)             # AttributeError: the stage's function is gone
    clock = time.thread_time_ns

    def timed(*args, **kwargs):
        started = clock()
        try:
            return original(*args, **kwargs)
        finally:
            entry = sums[label]
            entry[0] += clock() - started
            entry[1] += 1
    timed.__wrapped__ = original
    setattr(owner, name, staticmethod(timed) if isinstance(declared, staticmethod) else timed)


def serve(out: Path, argv: list[str]) -> None:
    """Run the daemon's command line with every stage wrapped; write the sums at exit."""
    from dsmpacs.app import install_engine

    install_engine()        # first: the engine replaces some of the functions wrapped here
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _depth, label, module, path in STAGES:
        _wrap(sums, label, module, path)
    atexit.register(lambda: out.write_text(json.dumps(sums)))
    from dsmpacs.cli import main as cli

    sys.argv = ["dsmpacs", *argv]
    cli()


# --- the tool's side -----------------------------------------------------------------
def budget_round(folder: Path, profile: Path, senders: int, workdir: Path) -> tuple[dict, float]:
    """One push into a fresh daemon: the stage sums and the daemon's CPU seconds."""
    from bench.common import DsmPacs, process_cpu
    from bench.ingest import push

    out = workdir / "budget.json"
    target = DsmPacs(workdir, entry=("-m", "bench.ingest_budget", "--serve", str(out), "--"),
                     one_process=True).start()
    try:
        before = process_cpu(target.pid)
        push(target, folder, profile, senders)
        cpu = process_cpu(target.pid) - before
    finally:
        target.stop()
    if not out.exists():
        raise RuntimeError(f"the daemon wrote no budget; see {workdir / 'stderr'}")
    return json.loads(out.read_text()), cpu


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve(Path(argv[1]), argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    from bench.common import RoundDirs, exit_cleanly_on_sigterm, section_parser
    from bench.ingest import PROFILE, chosen_corpus

    parser = section_parser(__doc__)
    parser.add_argument("--corpus", default="small", choices=("small", "ct", "dsa", "parallel"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    folder, count, senders = chosen_corpus(args)
    rounds: list[tuple[dict, float]] = []
    with RoundDirs("ingest-budget") as dirs:
        profile = dirs.root / "storescu.cfg"
        profile.write_text(PROFILE)
        for round_ in range(args.rounds):
            rounds.append(budget_round(folder, profile, senders, dirs.fresh(f"round-{round_}")))
    print(f"{args.corpus}: {count} instances, {senders} sender(s), {args.rounds} round(s); "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"daemon CPU, every thread: {statistics.median(c for _, c in rounds) / count * 1e6:.0f} µs "
          f"an instance (median of the rounds)")
    print(f"{'µs/inst':>8} {'calls/inst':>10}  stage (each line includes those indented under it)")
    for depth, label, module, path in STAGES:
        micros = statistics.median(s.get(label, [0, 0])[0] for s, _ in rounds) / count / 1e3
        calls = statistics.median(s.get(label, [0, 0])[1] for s, _ in rounds) / count
        print(f"{micros:8.0f} {calls:10.2f}  {'  ' * depth}{label}  [{module.rsplit('.', 1)[-1]}.{path}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
