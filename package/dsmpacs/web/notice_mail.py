"""The words of a notification e-mail, from the UI's catalogs: English then
Simplified Chinese, as the archive serves both and does not know which one a
user reads (no request at hand when an event fires). Outside web/shares/ so the
DICOM process, which words mail too (dsmpacs/app.py), does not load the blueprint."""
from __future__ import annotations

from dsmpacs.archive.notifications import Note
from dsmpacs.web.filters import person_name
from dsmpacs.web.i18n import translate

LANGUAGES = ("en", "zh-Hans")


def _text(lang: str, note: Note) -> str:
    params = note.params
    return translate(lang, f"notice.{note.kind}", patient=person_name(params.get("patient", "")),
                     by=params.get("by", ""), due=params.get("due", ""))


def wording(note: Note) -> tuple[str, str]:
    """(subject, body) of the e-mail telling ``note``."""
    subject = f"DSM PACS: {_text('en', note)}"
    lines = [_text(lang, note) for lang in LANGUAGES]
    if note.study_instance_uid:
        lines += ["", translate("en", "notice.mail.study", uid=note.study_instance_uid),
                  translate("zh-Hans", "notice.mail.study", uid=note.study_instance_uid)]
    lines += ["", translate("en", "notice.mail.footer"), translate("zh-Hans", "notice.mail.footer")]
    return subject, "\n".join(lines) + "\n"
