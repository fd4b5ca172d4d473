"""Rules that turn an arriving study into a reading task (archive/reading.py).

A rule matches on the study's institution, a modality of the study and a
pattern on its description (shell wildcards, case-insensitive; empty fields
match anything) and says who reads it (a user, or '' for the pool any
radiologist may claim from), at which UPS priority, due how many hours after
arrival, and whether the assignee also gets the patient's prior studies.
The first rule by position wins; a study no rule matches waits in the pool.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import ReadingRule

# PS3.4 CC.2.5: Scheduled Procedure Step Priority, most urgent first.
PRIORITIES = ("HIGH", "MEDIUM", "LOW")
# Order priorities (archive/orders.py) and loose spellings mapped onto UPS ones.
_ALIASES = {"STAT": "HIGH", "URGENT": "HIGH", "ROUTINE": "MEDIUM", "NORMAL": "MEDIUM"}


def normal_priority(value: str) -> str:
    value = (value or "").strip().upper()
    value = _ALIASES.get(value, value)
    if value not in PRIORITIES:
        raise ValueError(f"unknown priority {value!r} (one of {', '.join(PRIORITIES)})")
    return value


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    institution: str
    modality: str
    pattern: str
    assignee: str
    priority: str
    due_hours: int
    include_priors: bool
    position: int

    def matches(self, institution: str, modality: str, description: str) -> bool:
        if self.institution and self.institution != institution:
            return False
        if self.modality and self.modality.upper() not in {m.upper() for m in modality.split("\\")}:
            return False
        return not self.pattern or fnmatch.fnmatch(description.casefold(), self.pattern.casefold())


def _rule(row: ReadingRule) -> Rule:
    return Rule(row.id, row.name, row.institution, row.modality, row.pattern, row.assignee, row.priority,
                row.due_hours, bool(row.include_priors), row.position)


class Rules:
    def __init__(self, index: Index):
        self.index = index

    def all(self) -> list[Rule]:
        with self.index.read():
            return [_rule(r) for r in ReadingRule.select().order_by(ReadingRule.position, ReadingRule.id)]

    def matching(self, institution: str, modality: str, description: str) -> Rule | None:
        """Called inside the task's write transaction (no transaction of its own)."""
        for row in ReadingRule.select().order_by(ReadingRule.position, ReadingRule.id):
            rule = _rule(row)
            if rule.matches(institution, modality, description):
                return rule
        return None

    def add(self, *, name: str, institution: str = "", modality: str = "", pattern: str = "",
            assignee: str = "", priority: str = "MEDIUM", due_hours: int = 24, include_priors: bool = False,
            position: int | None = None, created_by: str = "") -> Rule:
        name = name.strip()
        if not name or len(name) > 64:
            raise ValueError("a rule needs a name of 1 to 64 characters")
        if not 0 < int(due_hours) <= 24 * 365:
            raise ValueError("due time must be 1 hour to a year")
        with self.index.write():
            if position is None:
                last = ReadingRule.select(ReadingRule.position).order_by(ReadingRule.position.desc()).first()
                position = (last.position + 1) if last else 0
            row = ReadingRule.create(name=name, institution=institution.strip()[:64],
                                     modality=modality.strip().upper()[:16], pattern=pattern.strip()[:128],
                                     assignee=assignee.strip()[:64], priority=normal_priority(priority),
                                     due_hours=int(due_hours), include_priors=bool(include_priors),
                                     position=position, created_by=created_by)
        return _rule(row)

    def delete(self, rule_id: int) -> Rule | None:
        with self.index.write():
            row = ReadingRule.get_or_none(ReadingRule.id == rule_id)
            if row is None:
                return None
            row.delete_instance()
        return _rule(row)
