"""Plain-text tables that stay aligned with Chinese text (two terminal columns per ideograph)."""
from __future__ import annotations

import unicodedata

import click


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else
               0 if unicodedata.combining(c) else 1 for c in text)


def pad(text: str, size: int) -> str:
    return text + " " * max(0, size - width(text))


def print_table(header: list[str], rows: list[list[str]], *, max_width: int = 64) -> None:
    """Columns padded to the widest cell; cells cut at max_width (64 keeps every UID whole)."""
    def cell(value: str) -> str:
        value = value.replace("\n", " ")
        if width(value) <= max_width:
            return value
        while width(value) > max_width - 1:
            value = value[:-1]
        return value + "…"

    rows = [[cell(str(v)) for v in row] for row in rows]
    sizes = [max([width(h)] + [width(r[i]) for r in rows]) for i, h in enumerate(header)]
    click.echo("  ".join(pad(h, s) for h, s in zip(header, sizes)).rstrip())
    click.echo("  ".join("-" * s for s in sizes))
    for row in rows:
        click.echo("  ".join(pad(v, s) for v, s in zip(row, sizes)).rstrip())
