"""imaging/overlay.py: the viewer's overlay dict read from real headers
(positioner angles, orientation letters, shutters, frame time, spacing)."""
from __future__ import annotations

from dsmpacs.imaging.overlay import orientation, overlay, shutters
from tests import factories as f


def test_xa_header_gives_angles_frame_time_orientation_shutters_and_spacing():
    ds = f.xa_run(frames=2, size=16, patient=f.Patient(name="王^小明", patient_id="CN-7", charset="GB18030"))
    ds.PositionerPrimaryAngle = -32.5            # RAO
    ds.PositionerSecondaryAngle = 18             # CRAN
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.154, 0.154]
    ds.ShutterShape = ["RECTANGULAR", "CIRCULAR", "POLYGONAL"]
    ds.ShutterLeftVerticalEdge, ds.ShutterRightVerticalEdge = 2, 15
    ds.ShutterUpperHorizontalEdge, ds.ShutterLowerHorizontalEdge = 3, 14
    ds.CenterOfCircularShutter = [8, 9]           # row, column (1-based)
    ds.RadiusOfCircularShutter = 7
    ds.VerticesOfThePolygonalShutter = [1, 1, 1, 16, 16, 8]   # row\column pairs
    o = overlay(ds)
    assert o["patient_name"] == "王^小明" and o["patient_id"] == "CN-7" and o["modality"] == "XA"
    assert (o["positioner_primary_angle"], o["positioner_secondary_angle"]) == (-32.5, 18.0)
    assert o["frame_time_ms"] == 66.7
    assert o["orientation"] == {"right": "L", "left": "R", "bottom": "F", "top": "H"}
    assert o["imager_pixel_spacing"] == [0.154, 0.154] and o["pixel_spacing"] is None
    assert o["shutters"] == {
        "rectangle": {"left": 1.0, "right": 15.0, "top": 2.0, "bottom": 14.0},
        "circle": {"x": 8.5, "y": 7.5, "radius": 7.0},
        "polygon": [[0.5, 0.5], [15.5, 0.5], [7.5, 15.5]],
    }


def test_orientation_from_image_orientation_patient_and_missing_values():
    ct = f.ct_slice(size=16)
    ct.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]          # axial: rows go to L, columns to P
    assert orientation(ct) == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    ct.ImageOrientationPatient = [0.8, 0.6, 0, 0, 0, -1]     # oblique row direction
    assert orientation(ct) == {"right": "LP", "left": "RA", "bottom": "F", "top": "H"}
    ct.PixelSpacing = [0.5, 0.6]
    ct.FrameTimeVector = [0, 40, 40, 50]
    o = overlay(ct)
    assert o["pixel_spacing"] == [0.5, 0.6] and o["frame_time_ms"] == 130 / 3
    assert o["positioner_primary_angle"] is None and o["shutters"] is None
    bare = f.secondary_capture(size=8)
    assert orientation(bare) is None and shutters(bare) is None and overlay(bare)["frame_time_ms"] is None
