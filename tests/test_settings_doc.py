"""docs/settings.md is generated from the code; this keeps the two equal."""
from __future__ import annotations

from pathlib import Path

from dsmpacs.settings import settings_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_settings_reference_is_current():
    assert DOC.read_text(encoding="utf-8") == settings_markdown(), \
        "regenerate it: .venv/bin/dsmpacs settings --markdown > docs/settings.md"
