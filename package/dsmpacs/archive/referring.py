"""Referring physicians: members of an institution with the membership role
"referring" (archive/visibility.py), who see there only their own patients'
studies, and of those only the ones whose report is final.

"Their patients" are the studies whose Referring Physician's Name (0008,0090)
matches the DICOM name an administrator linked to the account, plus studies
shared with them one by one (an active grant, archive/grants.py). "Final" means
a row of the reports table in state final or amended (``has_final_report``), or
preliminary: a preliminary report is issued to be read by the referring physician
before the final one, and the report page marks it preliminary. A draft never
qualifies, so a referring physician sees nothing rather than unreported images.

``referring_filter`` is the one decision. ``install`` hands it to
archive/visibility.py (``register_referring_filter``) as a condition over Study,
so the Scope that guards every route and list applies it; nothing else repeats it.
"""
from __future__ import annotations

import unicodedata

import peewee

from dsmpacs.archive.charset import person_name_search_forms
from dsmpacs.archive.grants import Grants
from dsmpacs.archive.index import Index
from dsmpacs.archive.models import ReferringName, Report, Study, utcnow

# Report states that show a study to its referring physicians (a preliminary is
# meant for them: it comes first when the result is urgent).
FINAL_STATES = ("preliminary", "final", "amended")


def name_key(name: str) -> str:
    """A person name reduced for matching: the archive's own search forms
    (archive/charset.py), component groups joined by ``=``."""
    return "=".join(person_name_search_forms(unicodedata.normalize("NFKC", name or "")))


def _groups(name: str) -> set[str]:
    return {g for g in person_name_search_forms(unicodedata.normalize("NFKC", name or "")) if g}


def names_match(linked: str, referring: str) -> bool:
    """The linked name matches when any of its component groups equals one of the
    study's, case and trailing empty components ignored (SMITH^JOHN matches
    SMITH^JOHN=史^约翰, and 王^明 matches WANG^MING=王^明)."""
    return bool(_groups(linked) & _groups(referring))


def has_final_report(index: Index, study_instance_uid: str) -> bool:
    """True when the study's report (archive/reports.py) is final or amended."""
    return study_instance_uid in final_reported(index, [study_instance_uid])


def final_reported(index: Index, study_uids) -> set[str]:
    uids = list(study_uids)
    found: set[str] = set()
    with index.read():
        for start in range(0, len(uids), 500):        # bounded IN lists
            rows = (Report.select(Report.study_instance_uid)
                    .where(Report.study_instance_uid.in_(uids[start:start + 500]),
                           Report.state.in_(FINAL_STATES)))
            found.update(r.study_instance_uid for r in rows)
    return found


class Referring:
    def __init__(self, index: Index, grants: Grants):
        self.index = index
        self.grants = grants

    def linked_name(self, username: str) -> str:
        with self.index.read():
            row = ReferringName.get_or_none(ReferringName.username == username)
        return row.dicom_name if row else ""

    def link(self, username: str, dicom_name: str, *, by: str = "") -> None:
        """Link (or, with an empty name, unlink) the DICOM name of a referring physician."""
        dicom_name = dicom_name.strip()[:64]
        with self.index.write():
            ReferringName.delete().where(ReferringName.username == username).execute()
            if dicom_name:
                ReferringName.create(username=username, dicom_name=dicom_name,
                                     name_key=name_key(dicom_name)[:64], updated_by=by, updated_at=utcnow())

    def links(self) -> dict[str, str]:
        with self.index.read():
            return {r.username: r.dicom_name for r in ReferringName.select()}

    def patients_studies(self, username: str) -> set[str]:
        """Studies naming the linked physician, plus those shared with the user."""
        found = set(self.grants.studies_for(username))
        linked = self.linked_name(username)
        forms = sorted(_groups(linked))
        if forms:
            with self.index.read():
                # The indexed search forms (the same normalisation as the study list's search).
                rows = Study.select(Study.study_instance_uid, Study.referring_physician_name).where(
                    Study.referring_physician_name_alpha.in_(forms) | Study.referring_physician_name_ideo.in_(forms)
                    | Study.referring_physician_name_phon.in_(forms))
                found |= {r.study_instance_uid for r in rows
                          if names_match(linked, r.referring_physician_name or "")}
        return found

    def referring_filter(self, username: str) -> set[str]:
        """THE rule: the Study Instance UIDs a referring physician may see (their
        patients' studies with a final or amended report)."""
        return final_reported(self.index, self.patients_studies(username))

    def condition(self, username: str) -> peewee.Expression:
        """``referring_filter`` as a condition over Study, for visibility.Scope."""
        return Study.study_instance_uid.in_(sorted(self.referring_filter(username)))

    def allows(self, username: str, study_instance_uid: str) -> bool:
        return study_instance_uid in self.patients_studies(username) and \
            has_final_report(self.index, study_instance_uid)


def install(index: Index, grants: Grants) -> Referring:
    """Make this archive's rule the one visibility.Scope applies to referring members."""
    from dsmpacs.archive.visibility import register_referring_filter

    referring = Referring(index, grants)
    register_referring_filter(referring.condition)
    return referring
