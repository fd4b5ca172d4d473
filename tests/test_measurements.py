"""Measurements in the viewer, server side: calibration from the header, ellipse ROI
statistics in modality values, the per-user annotation store (SQLite and MariaDB,
and the migration to schema 6), the GSPS and KOS the archive builds and stores
through the ingest, and the JSON endpoints with their CSRF and role rules."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dsmpacs.archive import database
from dsmpacs.archive.annotations import AnnotationError, Annotations, Mark, parse_mark
from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.browse import study_files
from dsmpacs.archive.derived import load_source, presentation_state
from dsmpacs.archive.ingest import Origin
from dsmpacs.imaging import roi
from dsmpacs.imaging.calibration import calibration_of
from tests import factories as f
from tests.webclient import client_as, client_csrf

STUDY = "1.2.826.0.1.3680043.8.498.9301"


# --- calibration -------------------------------------------------------------------

def header(**attrs) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def test_pixel_spacing_comes_first():
    cal = calibration_of(header(PixelSpacing=[0.25, 0.3], ImagerPixelSpacing=[0.2, 0.2],
                                EstimatedRadiographicMagnificationFactor=1.5))
    assert (cal["source"], cal["row_mm"], cal["column_mm"], cal["magnification"]) == \
        ("pixel_spacing", 0.25, 0.3, None)


def test_imager_pixel_spacing_is_divided_by_the_magnification_factor():
    cal = calibration_of(header(ImagerPixelSpacing=[0.3, 0.3], EstimatedRadiographicMagnificationFactor=1.2))
    assert cal["source"] == "imager_pixel_spacing" and cal["magnification"] == 1.2
    assert cal["row_mm"] == pytest.approx(0.25) and cal["column_mm"] == pytest.approx(0.25)
    assert "Magnification Factor 1.2" in cal["note"]


def test_imager_pixel_spacing_without_magnification_is_uncorrected():
    cal = calibration_of(header(ImagerPixelSpacing=[0.154, 0.154]))
    assert (cal["source"], cal["row_mm"], cal["magnification"]) == ("imager_pixel_spacing", 0.154, None)
    assert "uncorrected" in cal["note"]


def test_enhanced_pixel_measures_and_nothing_at_all():
    measures = header(PixelSpacing=[0.5, 0.5])
    group = header(PixelMeasuresSequence=[measures])
    assert calibration_of(header(SharedFunctionalGroupsSequence=[group]))["row_mm"] == 0.5
    assert calibration_of(header())["source"] is None
    assert calibration_of(header(PixelSpacing=[0, 0]))["source"] is None     # unusable: ignored


# --- ROI statistics ----------------------------------------------------------------

def ct_with_disc(tmp_path, value=40, background=-1000):
    """A CT slice: a disc of radius 10 at (32, 32) with HU ``value``, the rest ``background``."""
    ds = f.ct_slice(size=64, patient=f.Patient("ROI^TEST", "ROI-1"), study_uid=STUDY)
    y, x = np.mgrid[0:64, 0:64]
    hu = np.where((x + 0.5 - 32) ** 2 + (y + 0.5 - 32) ** 2 <= 100, value, background)
    ds.PixelData = (hu + 1024).astype("<u2").tobytes()
    ds.PixelSpacing = [0.5, 0.5]
    return f.write(ds, tmp_path / "ct.dcm")


def test_ellipse_statistics_are_in_modality_values(tmp_path):
    path = ct_with_disc(tmp_path)
    inside = roi.ellipse_stats(path, 0, 32, 32, 8, 8)
    assert inside.mean == pytest.approx(40) and inside.sd == pytest.approx(0) and inside.pixels > 190
    half = roi.ellipse_stats(path, 0, 32, 32, 20, 20)      # disc and air
    assert -1000 < half.mean < 40 and half.sd > 100 and (half.min, half.max) == (-1000, 40)
    assert roi.ellipse_stats(path, 0, 32, 32, 0, 5).pixels == 0


# --- the per-user store and the migration --------------------------------------------

def test_annotations_are_per_user_and_replaced_per_frame(archive):
    store = Annotations(archive.index)
    a = [parse_mark({"kind": "length", "points": [[1, 2], [30.5, 2]], "label": "7.4 mm"}),
         parse_mark({"kind": "text", "points": [[5, 5]], "label": "狭窄"})]
    stored = store.replace_frame("rad1", STUDY, "1.2.3", "1.2.3.4", 2, a)
    assert [(m.kind, m.points, m.label) for m in stored] == [
        ("length", [[1.0, 2.0], [30.5, 2.0]], "7.4 mm"), ("text", [[5.0, 5.0]], "狭窄")]
    store.replace_frame("rad2", STUDY, "1.2.3", "1.2.3.4", 2, [a[0]])
    assert len(store.for_study("rad1", STUDY)) == 2 and len(store.for_study("rad2", STUDY)) == 1
    # replacing the frame keeps the creation time of an annotation sent back by id
    first = stored[0]
    again = store.replace_frame("rad1", STUDY, "1.2.3", "1.2.3.4", 2, [Mark("length", [[0, 0], [1, 1]], id=first.id)])
    assert len(again) == 1 and again[0].created == first.created
    assert store.delete("rad1", STUDY, again[0].id) and not store.delete("rad1", STUDY, again[0].id)
    assert store.for_study("rad1", STUDY) == []
    for bad in ({"kind": "blob", "points": []}, {"kind": "angle", "points": [[0, 0], [1, 1]]},
                {"kind": "length", "points": [[0, 0], [1, float("nan")]]},
                {"kind": "length", "points": [[0, 0], [1, True]]}):
        with pytest.raises(AnnotationError):
            parse_mark(bad)


def test_upgrade_from_version_5_creates_the_annotation_table(archive):
    from dsmpacs.archive.models import SchemaVersion

    Annotations(archive.index).replace_frame("u", STUDY, "1.2", "1.2.3", 0, [])
    with archive.index.write():
        archive.db.execute_sql("DROP TABLE annotation")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=5)
    assert database.upgrade(archive.db) == (5, database.LATEST_VERSION)
    store = Annotations(archive.index)
    store.replace_frame("u", STUDY, "1.2", "1.2.3", 0, [Mark("arrow", [[0, 0], [9, 9]])])
    assert [m.kind for m in store.for_study("u", STUDY)] == ["arrow"]


# --- GSPS and KOS ----------------------------------------------------------------------

def load_xa(archive, tmp_path):
    ds = f.xa_run(frames=4, size=64, patient=f.Patient("张^晓龙", "GSPS-1", charset="ISO_IR 192"),
                  study_uid=STUDY, series_number=3)
    ds.ImagerPixelSpacing = [0.3, 0.3]
    ds.EstimatedRadiographicMagnificationFactor = 1.2
    assert archive.ingest.import_file(f.write(ds, tmp_path / "xa.dcm"), Origin("import")).archived
    return ds


def test_gsps_graphics_in_pixel_units():
    ellipse, = presentation_state.graphics_of(Mark("ellipse", [[10, 20], [30, 60]]))[0]
    assert ellipse.GraphicType == "ELLIPSE" and ellipse.GraphicAnnotationUnits == "PIXEL"
    assert list(ellipse.GraphicData) == [20, 20, 20, 60, 10, 40, 30, 40]    # major (vertical) first
    graphics, texts = presentation_state.graphics_of(Mark("stenosis", [[0, 0], [0, 10], [5, 0], [5, 4]],
                                                          label="60 %"))
    assert [g.NumberOfGraphicPoints for g in graphics] == [2, 2]
    assert texts[0].UnformattedTextValue == "60 %" and list(texts[0].AnchorPoint) == [5, 4]


def test_client_save_to_study_stores_a_gsps_and_a_kos_through_the_ingest(client, archive, tmp_path):
    xa = load_xa(archive, tmp_path)
    client_as(client, archive, "radiologist", "rad1")
    token = client_csrf(client, "/studies")
    series, sop = str(xa.SeriesInstanceUID), str(xa.SOPInstanceUID)
    url = f"/viewer/annotations/{STUDY}/{series}/{sop}/2.json"
    marks = {"annotations": [{"kind": "length", "points": [[10, 10], [50, 10]], "label": "10.00 mm"},
                             {"kind": "ellipse", "points": [[20, 20], [40, 30]], "label": ""},
                             {"kind": "calibrate", "points": [[0, 0], [6, 0]], "extra": {"mm": 2}}]}
    # no CSRF token: refused; with it: stored
    assert client.put(url, json=marks).status_code == 403
    put = client.put(url, json=marks, headers={"X-CSRF-Token": token})
    assert put.status_code == 200, put.data
    assert put.status_code == 200 and [a["kind"] for a in put.json["annotations"]] == ["length", "ellipse", "calibrate"]
    assert client.put(f"/viewer/annotations/{STUDY}/{series}/{sop}/4.json", json=marks,
                      headers={"X-CSRF-Token": token}).status_code == 404          # frame 4 of 0..3
    got = client.get(f"/viewer/annotations/{STUDY}.json").json
    assert len(got["annotations"]) == 3 and got["presentation_states"] == []

    saved = client.post(f"/viewer/annotations/{STUDY}/save", json={"window": {"center": 2000, "width": 3000}},
                        headers={"X-CSRF-Token": token})
    assert saved.status_code == 201, saved.data
    files = {x.sop_instance_uid: x for x in study_files(archive.index, STUDY)}
    pr = files[saved.json["sop"]]
    assert pr.modality == "PR" and pr.series_instance_uid != series and pr.series_number == 4
    ds = dcmread(archive.storage.path(pr.path))
    assert ds.SOPClassUID == presentation_state.GSPS and str(ds.PatientName) == "张^晓龙"
    assert ds.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == sop
    item = ds.GraphicAnnotationSequence[0]
    assert item.ReferencedImageSequence[0].ReferencedFrameNumber == 3
    assert [g.GraphicType for g in item.GraphicObjectSequence] == ["POLYLINE", "ELLIPSE"]   # no calibration line
    assert ds.SoftcopyVOILUTSequence[0].WindowWidth == 3000 and ds.PresentationLUTShape == "IDENTITY"
    assert list(ds.DisplayedAreaSelectionSequence[0].DisplayedAreaBottomRightHandCorner) == [64, 64]
    # the viewer reads it back from the study
    shown = client.get(f"/viewer/annotations/{STUDY}.json").json["presentation_states"]
    assert {(m["kind"], m["frame"], m["sop"]) for m in shown} >= {("length", 2, sop), ("ellipse", 2, sop)}
    assert any(m["kind"] == "text" and m["label"] == "10.00 mm" for m in shown)

    kos = client.post(f"/viewer/keyimages/{STUDY}", json={"images": [{"series": series, "sop": sop, "frame": 1}],
                                                          "description": "关键"},
                      headers={"X-CSRF-Token": token})
    assert kos.status_code == 201
    ko = dcmread(archive.storage.path({x.sop_instance_uid: x for x in study_files(archive.index, STUDY)}
                                      [kos.json["sop"]].path))
    assert ko.ConceptNameCodeSequence[0].CodeValue == "113000" and ko.ContentSequence[0].TextValue == "关键"
    assert ko.ContentSequence[1].ReferencedSOPSequence[0].ReferencedFrameNumber == 2
    stores = [e for e in AuditTrail(archive.index).recent(limit=50) if e.action == "store"]
    assert len(stores) == 2 and all(e.actor == "rad1" and e.study_instance_uid == STUDY for e in stores)

    # the ROI endpoint and the calibration in the info JSON
    stats = client.get(f"/viewer/roi/{STUDY}/{series}/{sop}/0.json?cx=32&cy=32&rx=10&ry=10").json
    assert stats["pixels"] > 300 and 0 <= stats["mean"] < 4096
    info = client.get(f"/viewer/info/{STUDY}/{series}/{sop}.json").json
    assert info["calibration"]["source"] == "imager_pixel_spacing"
    assert info["calibration"]["row_mm"] == pytest.approx(0.25)


def test_a_viewer_keeps_annotations_but_may_not_save_into_the_study(client, archive, tmp_path):
    xa = load_xa(archive, tmp_path)
    client_as(client, archive, "viewer", "view1")
    token = client_csrf(client, "/studies")
    url = f"/viewer/annotations/{STUDY}/{xa.SeriesInstanceUID}/{xa.SOPInstanceUID}/0.json"
    body = {"annotations": [{"kind": "arrow", "points": [[1, 1], [9, 9]]}]}
    assert client.put(url, json=body, headers={"X-CSRF-Token": token}).status_code == 200
    assert client.post(f"/viewer/annotations/{STUDY}/save", json={},
                       headers={"X-CSRF-Token": token}).status_code == 403
    assert client.put(url, data=json.dumps({"annotations": [{"kind": "x"}]}), content_type="application/json",
                      headers={"X-CSRF-Token": token}).status_code == 400
    source = load_source(archive.index, archive.storage, STUDY, str(xa.SeriesInstanceUID), str(xa.SOPInstanceUID))
    assert (source.rows, source.columns, source.frames) == (64, 64, 4)
