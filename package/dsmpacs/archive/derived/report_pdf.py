"""The printable report: a PDF drawn with ReportLab, wrapped as an Encapsulated PDF
(PS3.3 A.45.1) so it travels with the study to any DICOM workstation.

Chinese is drawn with WenQuanYi Zen Hei when the system has it (embedded as a
subset with its Unicode map, so every PDF reader, pdftotext included, shows and
extracts the text). Without it the PDF falls back to ReportLab's CID font
STSong-Light, which needs no font file but relies on the reader's Adobe-GB1
language pack."""
from __future__ import annotations

import io
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dsmpacs.archive.derived import SourceImage, common_header
from dsmpacs.archive.derived.report_sr import DOCUMENT_TITLE, code, dicom_datetime

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
FONT_FILES = (Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
              Path("/usr/share/fonts/wqy-zenhei/wqy-zenhei.ttc"))
MAX_PDF_BYTES = 2**31 - 2        # an OB value's length must be even and fit 32 bits


@lru_cache(maxsize=1)
def font_name() -> str:
    """Register the CJK font once per process; its ReportLab name."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfbase.ttfonts import TTFont

    for path in FONT_FILES:
        if path.is_file():
            pdfmetrics.registerFont(TTFont("WQYZenHei", str(path), subfontIndex=0))
            return "WQYZenHei"
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    return "STSong-Light"


def _paragraphs(text: str) -> str:
    return "<br/>".join(escape(line) for line in text.split("\n"))


def render(*, title: str, patient: str, patient_id: str, study: str, study_date: str,
           sections: list[tuple[str, str]], footer: list[str]) -> bytes:
    """The PDF bytes: a title, the patient and study line, each (heading, text)
    section, then the signature lines."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    font = font_name()
    body = ParagraphStyle("body", fontName=font, fontSize=10.5, leading=15, wordWrap="CJK")
    heading = ParagraphStyle("heading", parent=body, fontSize=12, leading=18, spaceBefore=6)
    big = ParagraphStyle("title", parent=body, fontSize=16, leading=22, spaceAfter=6)
    small = ParagraphStyle("small", parent=body, fontSize=8.5, leading=12)
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
                            bottomMargin=16 * mm, title=title, author="DSM PACS")
    story = [Paragraph(escape(title), big),
             Paragraph(escape(f"{patient}  ·  {patient_id}  ·  {study_date}"), body),
             Paragraph(escape(study), small), Spacer(1, 4 * mm)]
    for name, text in sections:
        if text.strip():
            story += [Paragraph(escape(name), heading), Paragraph(_paragraphs(text), body)]
    story.append(Spacer(1, 6 * mm))
    story += [Paragraph(escape(line), small) for line in footer]
    doc.build(story)
    return out.getvalue()


def build(source: SourceImage, pdf: bytes, *, title: str, signed_at: datetime, series_number: int) -> Dataset:
    """The Encapsulated PDF instance holding ``pdf``."""
    if len(pdf) > MAX_PDF_BYTES:
        raise ValueError("PDF too large")
    ds = common_header(source, ENCAPSULATED_PDF, "DOC", "Report (PDF)", series_number, signed_at)
    ds.ContentDate = signed_at.strftime("%Y%m%d")
    ds.ContentTime = signed_at.strftime("%H%M%S")
    ds.AcquisitionDateTime = dicom_datetime(signed_at)
    ds.ConversionType = "WSD"                  # workstation: made here, not scanned
    ds.BurnedInAnnotation = "YES"              # it names the patient
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = Sequence([code(*DOCUMENT_TITLE)])
    ds.VerificationFlag = "VERIFIED"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    padded = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocument = padded
    ds.EncapsulatedDocumentLength = len(pdf)
    return ds
