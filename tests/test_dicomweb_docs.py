"""docs/dicomweb.md and section 9 of docs/conformance.md say what the code does."""
from __future__ import annotations

import re

from dsmpacs.web.dicomweb import stow
from tests.conftest import ROOT

CONFORMANCE = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "dicomweb.md").read_text(encoding="utf-8")


def test_failure_reasons_are_the_documented_ones():
    section = CONFORMANCE.split("### 9.3 STOW-RS", 1)[1].split("\n## ", 1)[0]
    documented = {int(code, 16) for code in re.findall(r"\| 0x([0-9A-F]{4}) \|", section)}
    assert documented == set(stow.FAILURE_REASON.values()) | {stow.STUDY_MISMATCH}


def test_every_route_is_in_the_guide(web_app):
    rules = {r.rule for r in web_app.url_map.iter_rules()
             if r.rule.startswith("/dicom-web") or r.rule == "/wado"}
    assert len(rules) > 20
    for rule in rules:
        path = rule.removeprefix("/dicom-web")
        for name in ("study", "series", "instance", "workitem"):
            path = path.replace(f"<{name}>", "{" + name + "}")
        path = path.replace("<frame_list>", "{list}").replace("<tag>", "{tag}").replace("<aetitle>", "{AETitle}")
        last = path.rsplit("/", 1)[-1]
        # the table names each resource by its path or its last segment ("/rendered", "/metadata")
        assert path in GUIDE or (f"/{last}" in GUIDE and not last.startswith("{")) \
            or path.replace("/studies/{study}/series/{series}", "...") in GUIDE, rule
