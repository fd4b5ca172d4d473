"""Orders imported from a CSV file: one order per line, each checked on its own.

The first line names the columns (``ordercsv.COLUMNS``, in any order; unknown
columns are an error, so a misspelt header is not silently ignored). The file
is UTF-8 (a byte order mark is allowed, as spreadsheet programs write one), at
most MAX_BYTES and MAX_ROWS lines. Good lines become orders; each bad line is
reported with its line number and the reason, and does not stop the others.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from dsmpacs.archive.orders import OrderError, OrderInput, Orders, OrderView

COLUMNS = tuple(OrderInput.names())
REQUIRED = ("patient_id", "patient_name", "procedure_description", "scheduled_date", "modality")
MAX_BYTES = 1 * 2**20
MAX_ROWS = 1000


@dataclass
class LineError:
    line: int              # 1-based line number in the file (the header is line 1)
    code: str              # orders.error.<code> in the UI catalog
    field: str
    message: str


@dataclass
class ImportResult:
    created: list[OrderView] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


class ImportRefused(ValueError):
    """The file as a whole cannot be read (too large, not UTF-8, bad header)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def read_rows(data: bytes) -> list[tuple[int, dict[str, str]]]:
    """(line number, values by column) for each non-empty data line."""
    if len(data) > MAX_BYTES:
        raise ImportRefused("too_large", f"the file is larger than {MAX_BYTES // 2**20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused("not_utf8", f"the file is not UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ImportRefused("empty", "the file is empty") from None
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise ImportRefused("bad_header", f"unknown columns: {', '.join(unknown)[:200]}")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ImportRefused("bad_header", f"missing columns: {', '.join(missing)}")
    rows = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(rows) >= MAX_ROWS:
                raise ImportRefused("too_many", f"more than {MAX_ROWS} lines")
            rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise ImportRefused("bad_csv", f"line {reader.line_num}: {exc}") from None
    out = []
    for line, cells in rows:
        if len(cells) != len(header):
            out.append((line, {"__cells__": str(len(cells))}))
        else:
            out.append((line, dict(zip(header, cells))))
    return out


def import_csv(orders: Orders, data: bytes, *, actor: str = "", institution: int | None = None) -> ImportResult:
    result = ImportResult()
    for line, values in read_rows(data):
        if "__cells__" in values:
            result.errors.append(LineError(line, "cell_count", "",
                                           f"{values['__cells__']} cells, the header has a different number"))
            continue
        try:
            result.created.append(orders.create(OrderInput(**values), actor=actor, institution=institution))
        except OrderError as exc:
            result.errors.append(LineError(line, exc.code, exc.field, str(exc)))
    return result
