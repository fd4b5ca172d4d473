"""Two versions of this archive's store path side by side: storescu into each in turn.

    .venv/bin/python -m bench.ingest_ab BEFORE_CHECKOUT AFTER_CHECKOUT [--rounds 8]
        [--corpus small|ct|dsa|parallel] [--quick]

Not a section of ``python -m bench``: a tool for a change to the store path, the way
bench/web_ab.py is for the request path. Each checkout (a directory holding
``package/``, e.g. /work/main and a git worktree of the commit before) runs its own
DICOM daemon with PYTHONPATH pointing at it, started fresh on an empty data dir for
every push, exactly as bench/ingest.py starts ours. The two take turns (round 0:
before, after; round 1: after, before; ...), and every figure is paired round by
round: the push's wall time (storescu's start to its exit) and the daemon's CPU
milliseconds per instance (user and system time from /proc), and the user time alone.
Both must have stored every instance. On a shared 2-core VM one push of 2,000 small
instances varied from 3.5 to 6.5 s within minutes; a change of a few percent shows
only in many alternated rounds, and the CPU per instance moves less than the wall
time. The system time moves most: in one run of 16 DSA rounds on this VM the
kernel's share of a push went from about 25 ms an instance to 60-90 ms from the third
round on (why is not established: the disk is ext4 mounted with ``discard``, and the
rounds' files stay until the run ends), while the user time, where a change to our
Python shows, stayed near 30 ms.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.common import (
    DsmPacs,
    RoundDirs,
    exit_cleanly_on_sigterm,
    on_pythonpath,
    process_times,
    section_parser,
    spread,
    stored_instances,
)
from bench.ingest import PROFILE, chosen_corpus, push


def main(argv: list[str] | None = None) -> int:
    parser = section_parser(__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--corpus", default="small", choices=("small", "ct", "dsa", "parallel"))
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    folder, count, senders = chosen_corpus(args)
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in checkouts}
    print(f"{args.corpus}: {count} instances, {senders} sender(s); before {checkouts['before']}, "
          f"after {checkouts['after']}")
    with RoundDirs("ingest-ab") as dirs:
        profile = dirs.root / "storescu.cfg"
        profile.write_text(PROFILE)
        for round_ in range(args.rounds):
            for name in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
                workdir = dirs.fresh(f"{name}-{round_}")
                with on_pythonpath(checkouts[name]):
                    target = DsmPacs(workdir).start()
                try:
                    user, system = process_times(target.pid)
                    seconds = push(target, folder, profile, senders)
                    user_after, system_after = process_times(target.pid)
                    per_instance = (user_after + system_after - user - system) * 1000 / count
                    user_per_instance = (user_after - user) * 1000 / count
                finally:
                    target.stop()
                stored = stored_instances(workdir)
                if stored != count:
                    raise SystemExit(f"[ingest_ab] {name} stored {stored} of {count} instances")
                results[name].append((seconds, per_instance, user_per_instance))
            before, after = results["before"][-1], results["after"][-1]
            print(f"  round {round_}: wall before {before[0]:.2f} s, after {after[0]:.2f} s "
                  f"(after/before {after[0] / before[0]:.2f}); CPU {before[1]:.2f} / {after[1]:.2f} ms an "
                  f"instance, user {before[2]:.2f} / {after[2]:.2f}; load {os.getloadavg()[0]:.1f}", flush=True)
    pairs = list(zip(results["before"], results["after"]))
    print(f"wall after/before, round by round: {spread([a[0] / b[0] for b, a in pairs])}; "
          f"CPU per instance before {spread([b[1] for b, _ in pairs])} ms, "
          f"after {spread([a[1] for _, a in pairs])} ms, after/before {spread([a[1] / b[1] for b, a in pairs])}; "
          f"user CPU after/before {spread([a[2] / b[2] for b, a in pairs])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
