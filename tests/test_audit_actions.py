"""Every action the package writes to the audit trail has its place in
``AuditAction`` and so its own PS3.15 event in the syslog export
(archive/audit.py ``EVENTS``). An action some module invents without that falls
back to "Security Alert", which makes an order import or a signed report look
like an attack to whoever reads the trail in a SIEM. The package is read as
source: the module-level ``AUDIT_*`` string constants and the string literals
handed to a ``record(...)`` call as its action."""
from __future__ import annotations

import ast
from pathlib import Path

import dsmpacs
from dsmpacs.archive.audit import EVENTS, AuditAction, event_for

PACKAGE = Path(dsmpacs.__file__).parent


def _literal_actions() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(PACKAGE))
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                values = value.elts if isinstance(value, ast.Tuple) else [value]
                for name, val in zip(names, values):
                    if (isinstance(name, ast.Name) and name.id.startswith("AUDIT_")
                            and isinstance(val, ast.Constant) and isinstance(val.value, str)):
                        found[val.value] = f"{where}:{name.id}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "record" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("audit", "trail")):
                # web/audit.record(action, ...) takes the action first; AuditTrail.record(actor, action, ...)
                # second. A literal in either place that looks like an action name counts.
                for arg in node.args[:2]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and "-" in arg.value:
                        found[arg.value] = f"{where}:{node.lineno}"
    return found


def test_the_scan_sees_the_actions_it_is_meant_to_see():
    actions = _literal_actions()
    # one of each kind: a constant in the domain, a tuple of constants, a literal in a view
    assert "order-create" in actions and "report-sign" in actions and "ups-search" in actions


def test_every_audit_action_in_the_package_has_its_own_event():
    unknown = {action: where for action, where in _literal_actions().items()
               if action not in {a.value for a in AuditAction}}
    assert unknown == {}, "add these to AuditAction and EVENTS in archive/audit.py"


def test_every_action_maps_to_an_event_and_only_refusals_and_security_changes_are_alerts():
    assert set(EVENTS) == set(AuditAction)
    assert event_for("order-create") == "Order Record"
    assert event_for("report-sign") == "Procedure Record"
    assert event_for("something-new").startswith("Security Alert")
