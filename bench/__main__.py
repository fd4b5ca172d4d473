"""`make bench`: every benchmark section in one run.

    python -m bench [--quick] [SECTION ...]      SECTION: ingest, find, scale, web, viewer, mpr (default: all)

``--quick`` runs each section at small sizes (a smoke run of a few minutes);
without it every section runs at full size.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

SECTIONS = ["ingest", "find", "scale", "web", "viewer", "mpr"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"sections to run, of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes in every section")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [name.removeprefix("bench.") for name in args.sections] or SECTIONS
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        build_parser().error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    started = time.perf_counter()
    status = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        status |= module.main(["--quick"] if args.quick else [])
    print(f"\nmake bench{' (--quick)' if args.quick else ''}: {', '.join(names)} in "
          f"{time.perf_counter() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
