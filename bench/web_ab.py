"""Two versions of this archive's web path side by side: a rendered frame's server CPU.

    .venv/bin/python -m bench.web_ab BEFORE_CHECKOUT AFTER_CHECKOUT [--rounds 6] [--requests 300]

Not a section of ``python -m bench``: a tool for a change to the request path. Each
checkout (a directory holding ``package/``, e.g. /work/main and a git worktree) runs
its own ``dsmpacs serve`` with PYTHONPATH pointing at it; both receive the XA run of
bench/web.py and answer the same rendered frame to one keep-alive session each, with
HTTP Basic. Requests are interleaved, the first server alternating, so that load from
elsewhere on a shared machine falls on both alike; per round, the CPU milliseconds of
each web process per request (user and system time from /proc) and the median wall
time. The two answers must be the same bytes.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import WORK, exit_cleanly_on_sigterm, on_pythonpath, process_cpu, section_parser
from bench.web import FRAME, PASSWORD, USER, Ours, build_corpus, instance_path, store


def main(argv: list[str] | None = None) -> int:
    parser = section_parser(__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="web-ab-", dir=WORK))
    servers: dict[str, Ours] = {}
    try:
        corpus = tmp / "corpus"
        corpus.mkdir()
        uids = build_corpus(corpus, 0)
        for name, checkout in (("before", args.before), ("after", args.after)):
            with on_pythonpath(checkout.resolve()):
                server = servers[name] = Ours(tmp / name).start()
            store(server.ae_title, server.port, corpus)
            server.session = requests.Session()
            server.session.auth = (USER, PASSWORD)
            server.session.headers.update({"Accept-Encoding": "identity", "Accept": "image/jpeg"})
            server.frame_url = f"{server.url}{instance_path(uids)}/frames/{FRAME}/rendered"
            server.web_pid = json.loads((server.server.data_dir / "run" / "web.json").read_text())["pid"]
            for _ in range(5):                                              # warm-up
                answer = server.session.get(server.frame_url, timeout=60)
                answer.raise_for_status()
            server.body = answer.content
        if servers["before"].body != servers["after"].body:
            print("[web_ab] the two versions render different bytes", file=sys.stderr)
        names = list(servers)
        print(f"rendered frame {FRAME} of a 512x512 XA run, JPEG; web process CPU ms per request "
              f"({args.requests} requests a round, interleaved)")
        for round_ in range(args.rounds):
            cpu = {n: process_cpu(servers[n].web_pid) for n in names}
            wall: dict[str, list[float]] = {n: [] for n in names}
            for i in range(args.requests):
                for name in (names if (i + round_) % 2 == 0 else names[::-1]):
                    started = time.perf_counter()
                    servers[name].session.get(servers[name].frame_url, timeout=60)
                    wall[name].append(time.perf_counter() - started)
            ms = {n: (process_cpu(servers[n].web_pid) - cpu[n]) * 1000 / args.requests for n in names}
            print(f"  round {round_}: CPU before {ms['before']:.2f}, after {ms['after']:.2f} "
                  f"(after/before {ms['after'] / ms['before']:.2f}); wall median "
                  f"{statistics.median(wall['before']) * 1000:.2f} / {statistics.median(wall['after']) * 1000:.2f} ms; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
