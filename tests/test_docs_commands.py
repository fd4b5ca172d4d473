"""The README and docs name only commands that exist: every `make TARGET` is a
target of the Makefile, and every `dsmpacs COMMAND [SUBCOMMAND]` a command of the CLI."""
from __future__ import annotations

import re
from pathlib import Path

import click

from dsmpacs.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# "make it" is English; "synopkghelper update dsmpacs port-config" names a DSM resource.
PROSE = {"it"}
NOT_OURS = {"port-config"}


def mentions(pattern: str) -> set[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        for match in re.finditer(pattern, doc.read_text()):
            found.add((doc.name, match.group(1)))
    return found


def test_every_make_target_in_the_docs_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = mentions(r"\bmake ([a-z][a-z-]*)\b")
    assert {"run", "test", "spk", "wheelhouse"} <= {target for _, target in named}
    missing = sorted((doc, t) for doc, t in named if t not in targets and t not in PROSE)
    assert missing == []


def test_every_dsmpacs_command_in_the_docs_exists():
    named = mentions(r"`dsmpacs ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)")
    assert len(named) > 20
    missing = []
    for doc, words in sorted(named):
        command, _, sub = words.partition(" ")
        if command in NOT_OURS:
            continue
        found = main.commands.get(command)
        if found is None:
            missing.append((doc, words))
        elif sub and isinstance(found, click.Group) and sub not in found.commands:
            missing.append((doc, words))
    assert missing == []


def test_every_image_the_docs_show_exists_and_is_small():
    """Screenshots are committed (tests/test_workflow_e2e.py writes docs/img/workflow);
    a renamed shot must not leave a broken image, nor a large one bloat the repository."""
    shown = set()
    for doc in DOCS:
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", doc.read_text()):
            shown.add((doc, target))
    assert len(shown) >= 4
    missing = sorted(f"{doc.name}: {target}" for doc, target in shown if not (doc.parent / target).is_file())
    assert missing == []
    large = sorted(target for doc, target in shown if (doc.parent / target).stat().st_size > 150_000)
    assert large == []
