"""The DICOM objects of a signed report version: its SR and its Encapsulated PDF,
each in a new series of the study, stored through the single ingest path.

``objects_for_signature`` is what archive/reports.py calls while signing, before it
records the signature: if either object cannot be stored the version stays a draft.
A preliminary version gets its SR only (flagged preliminary); the PDF, for printing,
is made when the report is signed final."""
from __future__ import annotations

from dsmpacs.archive.browse import study_files
from dsmpacs.archive.derived import (
    SourceImage,
    SourceMissing,
    load_source,
    next_series_number,
    report_pdf,
    report_sr,
    store,
)
from dsmpacs.archive.index import Index
from dsmpacs.archive.ingest import Ingest
from dsmpacs.archive.reports import PRELIMINARY, ReportError, ReportView, Version, document_labels, templates

# Objects the archive makes: a report's header comes from an acquired image instead.
_DERIVED_MODALITIES = {"SR", "PR", "KO", "DOC"}


def _study_source(index: Index, ingest: Ingest, study: str) -> SourceImage:
    files = [f for f in study_files(index, study) if not f.corrupt]
    if not files:
        raise SourceMissing(f"no images in study {study}")
    first = next((f for f in files if f.modality not in _DERIVED_MODALITIES), files[0])
    return load_source(index, ingest.storage, study, first.series_instance_uid, first.sop_instance_uid)


def title_of(version: Version) -> str:
    template = templates().get(version.content.template)
    labels = document_labels()[version.content.language]
    return template.text("title", version.content.language) if template else labels["report"]


def pdf_sections(view: ReportView, version: Version) -> tuple[list[tuple[str, str]], list[str]]:
    """The PDF's (heading, text) sections and its signature lines, in the report's language."""
    c = version.content
    labels = document_labels()[c.language]
    sections = [(labels["findings"], c.findings),
                (labels["measurements"], "\n".join(m["label"] for m in c.measurements if m.get("label"))),
                (labels["key_images"], "\n".join(labels["image"].format(series=k["series"], sop=k["sop"],
                                                                        frame=k["frame"] + 1)
                                                 for k in c.key_images)),
                (labels["impression"], c.impression)]
    footer = []
    if version.amendment_reason:
        footer.append(labels["amendment"].format(version=version.version, reason=version.amendment_reason))
    footer += [labels["author"].format(author=version.author),
               labels["signed"].format(signer=version.signer, version=version.version,
                                       signed_at=version.signed_at.strftime("%Y-%m-%d %H:%M:%S")),
               labels["hash"].format(hash=version.content_hash)]
    return sections, footer


def objects_for_signature(index: Index, ingest: Ingest):
    """A ``make_objects`` for Reports.sign that stores the SR, then the PDF."""

    def make(view: ReportView, version: Version) -> tuple[str, str]:
        study = view.study_instance_uid
        try:
            source = _study_source(index, ingest, study)
            frames_of = {}
            for ref in [*version.content.key_images, *version.content.measurements]:
                image = load_source(index, ingest.storage, study, ref["series"], ref["sop"])
                frames_of[image.sop] = (image.sop_class, image.frames)
        except SourceMissing as exc:
            raise ReportError(str(exc)) from exc
        predecessor = None
        earlier = [v for v in view.history if v.version < version.version and v.sr_sop_instance_uid]
        if earlier:
            sop = earlier[-1].sr_sop_instance_uid
            series = next((f.series_instance_uid for f in study_files(index, study) if f.sop_instance_uid == sop),
                          None)
            predecessor = (series, sop) if series else None
        title = title_of(version)
        c = version.content
        sr = report_sr.build(source, title=title, language=c.language, findings=c.findings,
                             impression=c.impression, measurements=c.measurements, key_images=c.key_images,
                             frames_of=frames_of, author=version.author, signer=version.signer,
                             signed_at=version.signed_at, series_number=next_series_number(index, study),
                             predecessor=predecessor, preliminary=version.state == PRELIMINARY)
        _stored(store(ingest, sr, version.signer), "SR")
        if version.state == PRELIMINARY:
            # A preliminary is read on screen and in the SR; the PDF to print is the final's.
            return str(sr.SOPInstanceUID), ""
        sections, footer = pdf_sections(view, version)
        header = source.header
        pdf = report_pdf.render(title=title, patient=str(header.get("PatientName", "") or ""),
                                patient_id=str(header.get("PatientID", "") or ""), study=study,
                                study_date=str(header.get("StudyDate", "") or ""), sections=sections,
                                footer=footer)
        document = report_pdf.build(source, pdf, title=title, signed_at=version.signed_at,
                                    series_number=next_series_number(index, study))
        _stored(store(ingest, document, version.signer), "PDF")
        return str(sr.SOPInstanceUID), str(document.SOPInstanceUID)

    return make


def stored_pdf(archive, study: str, sop: str) -> bytes | None:
    """The PDF inside a stored Encapsulated PDF of ``study``, or None when it is not
    there or must not be served (archive.refusal: corrupt or damaged files)."""
    from pydicom import dcmread

    found = next((f for f in study_files(archive.index, study) if f.sop_instance_uid == sop), None)
    if found is None or found.sop_class_uid != report_pdf.ENCAPSULATED_PDF or archive.refusal(found, "report"):
        return None
    ds = dcmread(archive.storage.path(found.path))
    body = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    return body[:int(length)] if length else body


def _stored(result, what: str) -> None:
    if not result.archived:
        raise ReportError(f"the report's {what} could not be stored: {result.message}")
