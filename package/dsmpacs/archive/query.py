"""Query the index: PS3.4 C.2.2.2 matching compiled to SQL, shared by C-FIND and QIDO-RS.

The API speaks keywords and strings only: a ``Query`` holds the level, the
matching values (``{"PatientName": "ZHANG*", "StudyDate": "20170101-"}``), the
keywords to return and a limit/offset; ``Search.search`` yields rows of
``keyword -> value``. Decoding a DICOM identifier or a QIDO-RS URL into that
shape, and encoding the rows back, is the protocol layer's job.

Queries are relational: keys of the query level and of every level above it
may be matched and returned (a SERIES query may match PatientName). Keys of
lower levels are not supported at a level (``key_for`` returns None) and the
caller decides what to do with them.

Person names match, by default, case-insensitively on the normalised search
columns (``patient_name_alpha/_ideo/_phon``); a value without ``=`` matches
any of the three component groups, so ``ZHANG*`` and ``张*`` both find
``Zhang^San=张^三``. With ``pn_case_insensitive=False`` the whole stored value
is matched literally.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import peewee
from peewee import fn

from dsmpacs.archive.attributes import ATTRIBUTES, INTEGER_VRS, Attribute, Level
from dsmpacs.archive.charset import normalise, person_name_groups
from dsmpacs.archive.database import is_mysql
from dsmpacs.archive.index import Index
from dsmpacs.archive.matching import (
    Dialect,
    QueryError,
    all_of,
    any_of,
    combined_datetime,
    date_bounds,
    datetime_bounds,
    has_wildcard,
    match_integer,
    match_lowercase,
    match_text,
    match_text_in_values,
    match_uids,
    range_condition,
    time_bounds,
)
from dsmpacs.archive.models import Instance, Patient, Series, Study

__all__ = ["Key", "KEYS", "Query", "QueryError", "Search", "key_for", "keys_at", "LEVELS"]

LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
MODELS = {Level.PATIENT: Patient, Level.STUDY: Study, Level.SERIES: Series, Level.IMAGE: Instance}

# Matching types (PS3.4 C.2.2.2), as the conformance statement names them.
SINGLE = "single value"
WILDCARD = "wildcard"
UNIVERSAL = "universal"
RANGE = "range"
UID_LIST = "list of UID"
MULTIPLE = "multiple values"

_TEXT_MATCHING = (SINGLE, WILDCARD, UNIVERSAL, MULTIPLE)
_MATCHING_BY_VR = {
    "UI": (SINGLE, UID_LIST, UNIVERSAL),
    "DA": (SINGLE, RANGE, UNIVERSAL, MULTIPLE),
    "TM": (SINGLE, RANGE, UNIVERSAL, MULTIPLE),
    "DT": (SINGLE, RANGE, UNIVERSAL, MULTIPLE),
    **{vr: (SINGLE, UNIVERSAL, MULTIPLE) for vr in INTEGER_VRS},
}
# Stored values that may hold several values (backslash-joined in the column).
_MULTI_VALUED = {"ImageType", "OtherPatientIDs", "NameOfPhysiciansReadingStudy", "OperatorsName"}
# Person names with normalised search columns (<column>_alpha/_ideo/_phon).
_PN_SEARCH_FORMS = {"PatientName", "ReferringPhysicianName"}
# Date and time pairs matched as one date-time range when the SCU negotiated it.
DATE_TIME_PAIRS = (("StudyDate", "StudyTime"), ("SeriesDate", "SeriesTime"),
                   ("ContentDate", "ContentTime"), ("PatientBirthDate", "PatientBirthTime"),
                   ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"))


@dataclass(frozen=True)
class Key:
    keyword: str
    level: Level
    vr: str
    matching: tuple[str, ...]     # empty: return key only (counts)
    column: str | None = None     # column on the level's table; None: computed

    @property
    def matchable(self) -> bool:
        return bool(self.matching)


def _key(attr: Attribute) -> Key:
    if attr.derived and attr.keyword != "ModalitiesInStudy":
        matching: tuple[str, ...] = ()
    else:
        matching = _MATCHING_BY_VR.get(attr.vr, _TEXT_MATCHING)
    return Key(attr.keyword, attr.level, attr.vr, matching, attr.column)


KEYS: dict[str, Key] = {a.keyword: _key(a) for a in ATTRIBUTES}
KEYS.update({
    "NumberOfPatientRelatedStudies": Key("NumberOfPatientRelatedStudies", Level.PATIENT, "IS", ()),
    "NumberOfPatientRelatedSeries": Key("NumberOfPatientRelatedSeries", Level.PATIENT, "IS", ()),
    "NumberOfPatientRelatedInstances": Key("NumberOfPatientRelatedInstances", Level.PATIENT, "IS", ()),
    "SOPClassesInStudy": Key("SOPClassesInStudy", Level.STUDY, "UI", (SINGLE, UID_LIST, UNIVERSAL)),
})
UNIQUE_KEYS = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
               Level.SERIES: "SeriesInstanceUID", Level.IMAGE: "SOPInstanceUID"}


def _depth(level: Level) -> int:
    return LEVELS.index(level)


def key_for(level: Level, keyword: str) -> Key | None:
    """The key if it can be matched or returned at ``level`` (its own level or above)."""
    key = KEYS.get(keyword)
    return key if key is not None and _depth(key.level) <= _depth(level) else None


def keys_at(level: Level) -> list[str]:
    """Every keyword a query at ``level`` can return ("all attributes of this level")."""
    return [k for k, key in KEYS.items() if _depth(key.level) <= _depth(level)]


@dataclass(frozen=True)
class Query:
    """What to find. ``requested=None`` returns every key of the level and above."""
    level: Level
    filters: Mapping[str, str] = field(default_factory=dict)
    requested: Sequence[str] | None = ()
    limit: int | None = None
    offset: int = 0
    pn_case_insensitive: bool = True
    pn_pinyin: bool = False              # PatientName also matches the pinyin of a Chinese name (study list)
    combined_datetime: bool = False      # C.2.2.2.5.1, when the SCU negotiated it
    # archive/visibility.Scope: only the studies (and their patients, series,
    # instances) the user or peer may see; None: no restriction.
    scope: object | None = None

    def returned(self) -> list[str]:
        wanted = keys_at(self.level) if self.requested is None else list(self.requested)
        for keyword in wanted:
            if key_for(self.level, keyword) is None:
                raise QueryError(f"{keyword} is not a key at the {self.level.value} level")
        return list(dict.fromkeys(wanted))


class Search:
    """Runs queries against the index, in short read transactions."""

    def __init__(self, index: Index):
        self.index = index
        self.dialect = Dialect(is_mysql(index.db))

    # --- public ----------------------------------------------------------------
    def search(self, query: Query, *, batch: int = 500, first: int = 50) -> Iterator[dict[str, object]]:
        """Matching rows in a stable order (the level's row id), ``limit``/``offset``
        applied. Each row maps the returned keywords to values (str, or int for
        counts and integer VRs, None when unknown) and ``SpecificCharacterSet`` to
        the character set the row's data was stored in.

        The first page is ``first`` rows, then ``batch``: a C-FIND sends its first
        matches while the rest are still being read, as a page of 50 would."""
        level_model = MODELS[query.level]
        returned = query.returned()
        base = self.select(query, returned)
        remaining = query.limit
        offset, last_id = query.offset, None
        while remaining is None or remaining > 0:
            page_size = min(first, batch) if last_id is None else batch
            size = page_size if remaining is None else min(page_size, remaining)
            page = base if last_id is None else base.where(level_model.id > last_id)
            page = page.order_by(level_model.id).limit(size)
            if offset:
                page, offset = page.offset(offset), 0
            with self.index.read():
                rows = list(page.dicts())
                if "SOPClassesInStudy" in returned and rows:
                    self._add_sop_classes(rows)
            for row in rows:
                yield _clean(row, returned)
            if len(rows) < size:
                return
            last_id = rows[-1]["_id"]
            if remaining is not None:
                remaining -= len(rows)

    def newest_first(self, query: Query, *keywords: str) -> list[dict[str, object]]:
        """One page (``limit``/``offset``) ordered by ``keywords`` descending, then newest row:
        for people paging through results, where the most recent study date comes first.
        Each keyword must be a stored column of the query's level or above."""
        level_model = MODELS[query.level]
        returned = query.returned()
        order = [self._column(KEYS[k]).desc() for k in keywords] + [level_model.id.desc()]
        select = self.select(query, list(dict.fromkeys([*returned, *keywords]))).order_by(*order)
        if query.limit is not None:
            select = select.limit(query.limit)
        if query.offset:
            select = select.offset(query.offset)
        with self.index.read():
            rows = list(select.dicts())
        return [_clean(row, returned) for row in rows]

    def count(self, query: Query) -> int:
        """Number of matches, ignoring limit and offset."""
        level_model = MODELS[query.level]
        with self.index.read():
            return self.select(query, []).select(level_model.id).count()

    def select(self, query: Query, returned: list[str]) -> peewee.ModelSelect:
        """The SELECT for a query (without order/limit): for EXPLAIN and for ``search``.

        Conditions on higher levels become nested ``parent_id IN (SELECT id ...)``
        subqueries, so the database starts from the selective index (the patient's
        name columns for ``PatientName=ZHANG*``) and reaches the level's rows through
        the foreign-key index, instead of scanning the level and looking up parents.
        Higher levels are joined only to return their values."""
        level_model = MODELS[query.level]
        by_level = {level: list(conds) for level, conds in self._conditions(query).items()}
        visible = query.scope.condition() if query.scope is not None else None
        if visible is not None:
            # One more study-level condition: it rides the same subquery chain as the
            # filters, so patients, series and instances are narrowed through it.
            if query.level is Level.PATIENT:
                by_level.setdefault(Level.PATIENT, []).append(
                    Patient.id.in_(Study.select(Study.patient).where(visible)))
            elif query.level is not Level.STUDY:
                by_level.setdefault(Level.STUDY, []).append(visible)
        joined = {KEYS[k].level for k in returned}
        columns = [level_model.id.alias("_id"),
                   level_model.specific_character_set.alias("SpecificCharacterSet")]
        if "SOPClassesInStudy" in returned:
            joined.add(Level.STUDY)
            columns.append(Study.id.alias("_study_id"))
        columns += [self._column(KEYS[k]).alias(k) for k in returned if k != "SOPClassesInStudy"]
        select = level_model.select(*columns)
        for depth in range(_depth(query.level), 0, -1):
            if not any(_depth(lvl) <= depth - 1 for lvl in joined):
                break
            select = select.join_from(MODELS[LEVELS[depth]], MODELS[LEVELS[depth - 1]])

        parents = None          # ids of the matching rows one level up
        for depth in range(0, _depth(query.level)):
            model = MODELS[LEVELS[depth]]
            conditions = list(by_level.get(LEVELS[depth], []))
            if parents is not None:
                conditions.append(_parent_link(LEVELS[depth]).in_(parents))
            if conditions:
                parents = model.select(model.id).where(all_of(conditions))
        conditions = list(by_level.get(query.level, []))
        if parents is not None:
            conditions.append(_parent_link(query.level).in_(parents))
        if conditions and self.dialect.mysql:
            select = select.where(all_of(conditions))
        elif conditions:
            # SQLite: the level's own conditions go in a subquery too. In the outer
            # query, ORDER BY id tempts its planner (which has no statistics unless
            # ANALYZE ran) into scanning the table in id order instead of using the
            # index the condition offers. MariaDB plans the plain form well.
            select = select.where(level_model.id.in_(
                level_model.select(level_model.id).where(all_of(conditions))))
        if visible is not None and query.level is Level.STUDY:
            # On the outer query: walking the study list's date order, the planner
            # checks each row's institution and stops at the page's end, instead
            # of first collecting every visible study.
            select = select.where(visible)
        return select

    def explain(self, query: Query) -> list[str]:
        """The database's plan for the query, one line per step (tests and bench)."""
        select = self.select(query, query.returned()).order_by(MODELS[query.level].id)
        sql, params = select.sql()
        with self.index.read():
            if self.dialect.mysql:
                cursor = self.index.db.execute_sql("EXPLAIN " + sql, params)
                names = [d[0] for d in cursor.description]
                return [" ".join(f"{n}={v}" for n, v in zip(names, row)) for row in cursor.fetchall()]
            cursor = self.index.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params)
            return [row[-1] for row in cursor.fetchall()]

    # --- columns ----------------------------------------------------------------
    def _column(self, key: Key):
        if key.column is not None:
            return getattr(MODELS[key.level], key.column)
        studies = Study.alias()
        per_patient = {
            "NumberOfPatientRelatedStudies": fn.COUNT(studies.id),
            "NumberOfPatientRelatedSeries": fn.SUM(studies.number_of_study_related_series),
            "NumberOfPatientRelatedInstances": fn.SUM(studies.number_of_study_related_instances),
        }[key.keyword]
        return fn.COALESCE(studies.select(per_patient).where(studies.patient == Patient.id), 0)

    def _add_sop_classes(self, rows: list[dict]) -> None:
        study_ids = {row["_study_id"] for row in rows}
        found: dict[int, set[str]] = {}
        pairs = (Instance.select(Series.study, Instance.sop_class_uid).join(Series)
                 .where(Series.study.in_(study_ids)).distinct().tuples())
        for study_id, sop_class in pairs:
            found.setdefault(study_id, set()).add(sop_class)
        for row in rows:
            row["SOPClassesInStudy"] = "\\".join(sorted(found.get(row["_study_id"], ())))

    # --- conditions -------------------------------------------------------------
    def _conditions(self, query: Query) -> dict[Level, list]:
        """The SQL conditions of the query, by the level whose table they test."""
        filters = {k: v.strip(" \x00") for k, v in query.filters.items()}
        filters = {k: v for k, v in filters.items() if v not in ("", "*")}   # universal
        for keyword in filters:
            key = key_for(query.level, keyword)
            if key is None:
                raise QueryError(f"{keyword} is not a key at the {query.level.value} level")
            if not key.matchable:
                raise QueryError(f"{keyword} is a return key only; it cannot be matched")
        by_level: dict[Level, list] = {}
        if query.combined_datetime:
            for date_kw, time_kw in DATE_TIME_PAIRS:
                d, t = filters.get(date_kw, ""), filters.get(time_kw, "")
                if "-" in d and "-" in t:
                    key = KEYS[date_kw]
                    model = MODELS[key.level]
                    by_level.setdefault(key.level, []).append(combined_datetime(
                        getattr(model, key.column), getattr(model, KEYS[time_kw].column), d, t))
                    del filters[date_kw], filters[time_kw]
        for keyword, value in filters.items():
            key = KEYS[keyword]
            by_level.setdefault(key.level, []).append(self._condition(key, value, query))
        return by_level

    def _condition(self, key: Key, value: str, query: Query):
        if key.keyword == "ModalitiesInStudy":
            modalities = Series.select(Series.study).where(
                any_of([match_text(Series.modality, v, self.dialect) for v in _values(value)]))
            return Study.id.in_(modalities)
        if key.keyword == "SOPClassesInStudy":
            holding = (Series.select(Series.study).join(Instance)
                       .where(match_uids(Instance.sop_class_uid, value.split("\\"))))
            return Study.id.in_(holding)
        column = getattr(MODELS[key.level], key.column)
        if key.vr == "UI":
            if has_wildcard(value):
                raise QueryError(f"{key.keyword}: wildcards are not allowed in UIDs")
            return match_uids(column, value.split("\\"))
        if key.vr == "DA":
            return any_of([range_condition(column, *date_bounds(v)) for v in _values(value)])
        if key.vr == "TM":
            return any_of([range_condition(column, *time_bounds(v)) for v in _values(value)])
        if key.vr == "DT":
            return any_of([range_condition(column, *datetime_bounds(v)) for v in _values(value)])
        if key.vr in INTEGER_VRS:
            return any_of([match_integer(column, v) for v in _values(value)])
        if key.vr == "PN" and query.pn_case_insensitive:
            return any_of([self._person_name(key, column, v, query.pn_pinyin) for v in _values(value)])
        if key.keyword in _MULTI_VALUED:
            return any_of([match_text_in_values(column, v, self.dialect) for v in _values(value)])
        return any_of([match_text(column, v, self.dialect) for v in _values(value)])

    def _person_name(self, key: Key, column, value: str, pinyin: bool = False):
        """Case-insensitive, normalised PN matching (PS3.4 C.2.2.2.1 allows it); with
        ``pinyin`` a patient name also matches the pinyin of a Chinese name (an
        extension for the web UI's search box, not for DICOM queries)."""
        if key.keyword not in _PN_SEARCH_FORMS:
            return match_lowercase(column, value, self.dialect)
        model = MODELS[key.level]
        forms = [getattr(model, f"{key.column}_{g}") for g in ("alpha", "ideo", "phon")]
        if "=" not in value:
            pattern = normalise(value)
            if pinyin and key.keyword == "PatientName":
                forms += [model.patient_name_pinyin, model.patient_name_initials]
            return any_of([match_text(form, pattern, self.dialect) for form in forms])
        conditions = []
        for form, group in zip(forms, person_name_groups(value)):
            pattern = normalise(group)
            if pattern not in ("", "*"):
                conditions.append(match_text(form, pattern, self.dialect))
        return all_of(conditions) if conditions else (model.id > 0)


def _parent_link(level: Level):
    """The foreign key from ``level``'s table to its parent's."""
    return {Level.STUDY: Study.patient, Level.SERIES: Series.study, Level.IMAGE: Instance.series}[level]


def _values(value: str) -> list[str]:
    """Multiple value matching (C.2.2.2.8): ``CT\\MR`` matches either."""
    values = [v.strip(" \x00") for v in value.split("\\")]
    return [v for v in values if v] or [""]


def _clean(row: dict, returned: list[str]) -> dict[str, object]:
    out: dict[str, object] = {"SpecificCharacterSet": row.get("SpecificCharacterSet") or ""}
    for keyword in returned:
        value = row.get(keyword)
        if KEYS[keyword].vr in INTEGER_VRS:
            value = None if value is None else int(value)   # SUM() is a Decimal on MariaDB
        elif value is None:
            value = ""
        out[keyword] = value
    return out
