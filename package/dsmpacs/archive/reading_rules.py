"""Rules that turn an arriving study into a reading task (archive/reading.py).

A rule matches on the study's institution, a modality of the study and a
pattern on its description (shell wildcards, case-insensitive; empty fields
match anything) and says who reads it (a user, or '' for the pool any
radiologist may claim from), at which UPS priority, due how many hours after
arrival, and whether the assignee also gets the patient's prior studies.
The first rule by position wins; a study no rule matches waits in the pool.

An order's priority (archive/orders.py) is carried to the task of the study
matched to it: the task gets the more urgent of the rule's and the order's
priority, whichever comes first, the images or the match (``order_priority``,
``carry_order_priority``). The more urgent one, rather than the order's alone,
because a rule that says "every stroke CT is HIGH" must not be lowered by an
order registered with the form's default ROUTINE.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Order, OrderArrival, ReadingRule, ReadingTask, utcnow

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


def more_urgent(a: str, b: str) -> str:
    """The more urgent of two UPS priorities."""
    return min(a, b, key=PRIORITIES.index)


# How an arrival is matched to its order (archive/reconcile.py; literals, as that
# module imports orders, which imports this one).
_MATCHED_OUTCOMES = ("matched", "linked")
# Task states whose priority no longer matters (archive/reading.py).
_CLOSED_TASK_STATES = ("final", "amended", "canceled")


def order_priority(study_instance_uid: str) -> str | None:
    """The UPS priority of the order the study is matched to, or None (no order).
    Called inside the caller's transaction."""
    row = (Order.select(Order.priority).join(OrderArrival, on=(OrderArrival.order == Order.id))
           .where(OrderArrival.study_instance_uid == study_instance_uid,
                  OrderArrival.outcome.in_(_MATCHED_OUTCOMES)).tuples().first())
    if row is None:
        return None
    try:
        return normal_priority(row[0])
    except ValueError:
        return None


def carry_order_priority(study_instance_uid: str, priority: str) -> int:
    """A study was matched to its order after its reading task was made (images first,
    then the order or a reconciliation link): the open task takes the order's priority
    when that is more urgent. Inside the caller's write transaction; returns the
    number of tasks changed (0 or 1)."""
    try:
        priority = normal_priority(priority)
    except ValueError:
        return 0
    less_urgent = PRIORITIES[PRIORITIES.index(priority) + 1:]
    if not less_urgent:
        return 0
    return (ReadingTask.update(priority=priority, updated_at=utcnow())
            .where(ReadingTask.study_instance_uid == study_instance_uid, ReadingTask.priority.in_(less_urgent),
                   ReadingTask.state.not_in(_CLOSED_TASK_STATES)).execute())


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
