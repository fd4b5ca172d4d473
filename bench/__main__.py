"""`make bench`: every benchmark section in one run."""
from __future__ import annotations

import importlib
import sys

SECTIONS = ["bench.ingest", "bench.find", "bench.web"]


def main() -> int:
    wanted = sys.argv[1:] or SECTIONS
    status = 0
    for name in wanted:
        module = importlib.import_module(name if name.startswith("bench.") else f"bench.{name}")
        status |= module.main([])
    return status


if __name__ == "__main__":
    sys.exit(main())
