"""A Basic Text SR (PS3.3 A.35.1) of a signed report version, after TID 2000
"Basic Diagnostic Imaging Report": the document title, the language, a Findings
container (the findings text, each inserted measurement as a finding, the key
images as image references) and an Impressions container.

UTF-8 throughout (Specific Character Set ISO_IR 192), so Chinese text travels
unchanged. A signed document is COMPLETE and VERIFIED with the signer as Verifying
Observer and Preliminary Flag FINAL; an amendment, and the final report after a
preliminary one, names the SR of the version it replaces in the Predecessor
Documents Sequence, so a receiving system can tell the newer document.

A preliminary report (PS3.3 C.17.2: Preliminary Flag PRELIMINARY, "precedes the
final report ... not expected to contain all the reportable findings") is PARTIAL
and UNVERIFIED: nobody has attested it yet, and VERIFIED is only allowed with
COMPLETE. Its Verifying Observer Sequence is absent (required only when VERIFIED);
the Author Observer Sequence names who issued it."""
from __future__ import annotations

from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dsmpacs.archive.derived import SourceImage, common_header

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
DOCUMENT_TITLE = ("18748-4", "LN", "Diagnostic Imaging Report")
LANGUAGE = ("121049", "DCM", "Language of Content Item and Descendants")
FINDINGS = ("121070", "DCM", "Findings")
FINDING = ("121071", "DCM", "Finding")
IMPRESSIONS = ("121072", "DCM", "Impressions")
IMPRESSION = ("121073", "DCM", "Impression")
KEY_IMAGE = ("121180", "DCM", "Key Images")
# RFC 5646 tags of the report languages (PS3.16 CID 5000 uses the same scheme)
LANGUAGE_CODES = {"en": ("en", "RFC5646", "English"), "zh-Hans": ("zh-Hans", "RFC5646", "Chinese (Simplified)")}
ORGANIZATION = "DSM PACS"


def code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


def _item(relationship: str, value_type: str, concept: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([code(*concept)])
    return item


def _text(concept: tuple[str, str, str], value: str) -> Dataset:
    item = _item("CONTAINS", "TEXT", concept)
    item.TextValue = value
    return item


def _container(concept: tuple[str, str, str], children: list[Dataset]) -> Dataset:
    item = _item("CONTAINS", "CONTAINER", concept)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(children)
    return item


def dicom_datetime(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S")


def build(source: SourceImage, *, title: str, language: str, findings: str, impression: str,
          measurements: list[dict], key_images: list[dict], frames_of: dict[str, tuple[str, int]],
          author: str, signer: str, signed_at: datetime, series_number: int,
          predecessor: tuple[str, str] | None = None, now: datetime | None = None,
          preliminary: bool = False) -> Dataset:
    """The SR of one signed version. ``frames_of`` maps every referenced SOP Instance UID
    to (its SOP Class UID, its number of frames); ``predecessor`` is the (series,
    SOP Instance UID) of the SR this one amends."""
    now = now or signed_at
    ds = common_header(source, BASIC_TEXT_SR, "SR", "Report", series_number, now)
    ds.ContentDate = signed_at.strftime("%Y%m%d")
    ds.ContentTime = signed_at.strftime("%H%M%S")
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    ds.PreliminaryFlag = "PRELIMINARY" if preliminary else "FINAL"
    ds.CompletionFlag = "PARTIAL" if preliminary else "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED" if preliminary else "VERIFIED"
    if not preliminary:
        observer = Dataset()
        observer.VerifyingObserverName = signer[:64]
        observer.VerifyingObserverIdentificationCodeSequence = Sequence()
        observer.VerifyingOrganization = ORGANIZATION
        observer.VerificationDateTime = dicom_datetime(signed_at)
        ds.VerifyingObserverSequence = Sequence([observer])
    author_item = Dataset()
    author_item.ObserverType = "PSN"
    author_item.PersonName = author[:64]
    author_item.InstitutionName = str(source.header.get("InstitutionName", "") or "")
    ds.AuthorObserverSequence = Sequence([author_item])

    # Root: the document title, after TID 2000.
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code(*DOCUMENT_TITLE)])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2000"
    ds.ContentTemplateSequence = Sequence([template])

    language_item = _item("HAS CONCEPT MOD", "CODE", LANGUAGE)
    language_item.ConceptCodeSequence = Sequence([code(*LANGUAGE_CODES.get(language, LANGUAGE_CODES["en"]))])
    title_item = _item("HAS OBS CONTEXT", "TEXT", ("121050", "DCM", "Equivalent Meaning of Concept Name"))
    title_item.TextValue = title
    findings_items = [_text(FINDING, findings)] if findings.strip() else []
    for m in measurements:
        if m.get("label"):
            # The measurement as a finding, inferred from the frame it was drawn on.
            finding = _text(FINDING, m["label"])
            source_image = _image("INFERRED FROM", m, frames_of)
            del source_image.ConceptNameCodeSequence
            finding.ContentSequence = Sequence([source_image])
            findings_items.append(finding)
    findings_items += [_image("CONTAINS", ref, frames_of) for ref in key_images]
    content = [language_item, title_item]
    if findings_items:
        content.append(_container(FINDINGS, findings_items))
    if impression.strip():
        content.append(_container(IMPRESSIONS, [_text(IMPRESSION, impression)]))
    ds.ContentSequence = Sequence(content)

    evidence = {(r["series"], r["sop"]): frames_of[r["sop"]][0] for r in [*key_images, *measurements]}
    if evidence:
        ds.CurrentRequestedProcedureEvidenceSequence = Sequence([_hierarchy(source.study, evidence)])
    if predecessor is not None:
        series, sop = predecessor
        ds.PredecessorDocumentsSequence = Sequence([_hierarchy(source.study, {(series, sop): BASIC_TEXT_SR})])
    return ds


def _image(relationship: str, ref: dict, frames_of: dict[str, tuple[str, int]]) -> Dataset:
    """An IMAGE content item referencing one frame of an image of the study."""
    sop_class, frames = frames_of[ref["sop"]]
    image = _item(relationship, "IMAGE", KEY_IMAGE)
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = sop_class
    referenced.ReferencedSOPInstanceUID = ref["sop"]
    if frames > 1:
        referenced.ReferencedFrameNumber = ref["frame"] + 1
    image.ReferencedSOPSequence = Sequence([referenced])
    return image


def _hierarchy(study: str, instances: dict[tuple[str, str], str]) -> Dataset:
    """A SOP Instance Reference Macro item: study, its series, their instances."""
    by_series: dict[str, list[Dataset]] = {}
    for (series, sop), sop_class in instances.items():
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop
        by_series.setdefault(series, []).append(ref)
    item = Dataset()
    item.StudyInstanceUID = study
    item.ReferencedSeriesSequence = Sequence()
    for series, refs in by_series.items():
        s = Dataset()
        s.SeriesInstanceUID = series
        s.ReferencedSOPSequence = Sequence(refs)
        item.ReferencedSeriesSequence.append(s)
    return item


def text_of(ds: Dataset) -> dict[str, list[str]]:
    """The texts of an SR by container ("findings", "impressions"): what a reader of
    the stored document sees, used by tests and by nothing else in the archive."""
    out: dict[str, list[str]] = {"findings": [], "impressions": []}
    for item in ds.get("ContentSequence", []):
        if item.ValueType != "CONTAINER":
            continue
        meaning = item.ConceptNameCodeSequence[0].CodeValue
        key = "findings" if meaning == FINDINGS[0] else "impressions" if meaning == IMPRESSIONS[0] else None
        if key:
            out[key] += [str(c.TextValue) for c in item.get("ContentSequence", []) if c.ValueType == "TEXT"]
    return out
