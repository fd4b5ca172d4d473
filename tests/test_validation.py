"""Structurally broken datasets are refused on every store path, sound ones of every
shape still accepted, deflated data inflated within a bound, and imports kept inside
their medium. Against the archive as real processes, with dcmtk, pynetdicom and HTTP.
"""
from __future__ import annotations

import re
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import CliRunner
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian, JPEGBaseline8Bit

from dsmpacs.archive.part10 import read_meta_group
from dsmpacs.cli import main
from tests import factories as f
from tests.peers import ServerProcess, dcmtk, store_unchanged, wait_until
from tests.webclient import add_user, server_archive

MAX_INFLATED_MB = 64            # the servers' bound, small so a bomb is cheap to build
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    server = ServerProcess(root / "server", {"max_inflated_mb": MAX_INFLATED_MB}).start()
    try:
        auth = ("stow1", add_user(server, "stow1", "radiologist"))
        yield server, auth, root
    finally:
        server.stop()


# --- the datasets --------------------------------------------------------------------

def _with_pixel_data(ds: Dataset, value: bytes) -> Dataset:
    ds.PixelData = value
    return ds


def _insert_before_pixel_data(path: Path, element: bytes) -> Path:
    raw = path.read_bytes()
    at = raw.rfind(b"\xe0\x7f\x10\x00")
    path.write_bytes(raw[:at] + element + raw[at:])
    return path


def length_past_end(path: Path) -> Path:
    """A private OB element claiming 0xFFFFFFF0 bytes, two of them present."""
    f.write(f.secondary_capture(size=16), path)
    return _insert_before_pixel_data(
        path, struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 0xFFFFFFF0) + b"\x01\x02")


def nested_length_past_item(path: Path) -> Path:
    """A sequence item whose element runs past the item's end (and pydicom defers it)."""
    f.write(f.secondary_capture(size=16), path)
    inner = struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 0x10000) + b"\0" * 16
    item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
    return _insert_before_pixel_data(
        path, struct.pack("<HH2sHL", 0x0009, 0x1001, b"SQ", 0, len(item)) + item)


def deep_nesting(path: Path) -> Path:
    """Sequences nested 100 deep, undefined lengths all the way."""
    f.write(f.secondary_capture(size=16), path)
    depth = 100
    opening = struct.pack("<HH2sHL", 0x0009, 0x1001, b"SQ", 0, 0xFFFFFFFF) \
        + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return _insert_before_pixel_data(path, opening * depth + closing * depth)


def empty_pixel_data(path: Path) -> Path:
    return f.write(_with_pixel_data(f.secondary_capture(size=64), b""), path)


def short_pixel_data(path: Path) -> Path:
    """64 x 64 x 16 bits needs 8,192 bytes; 4,000 are there."""
    ds = f.secondary_capture(size=64)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    return f.write(_with_pixel_data(ds, b"\0" * 4000), path)


def no_fragments(path: Path) -> Path:
    """JPEG Baseline with a Basic Offset Table and no fragment at all."""
    ds = f.secondary_capture(size=64)
    ds.PixelData = struct.pack("<HHL", 0xFFFE, 0xE000, 0)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return f.write(ds, path, JPEGBaseline8Bit)


def sequence_cut_short(path: Path) -> Path:
    """The file ends inside an item of an undefined-length sequence: pydicom's parse
    fails with an OSError of its own, no longer a processing failure (0xC211)."""
    ds = f.secondary_capture(size=16)
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "121070", "DCM", "Findings"
    ds.ProcedureCodeSequence = [item]
    ds["ProcedureCodeSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    raw = f.write(ds, path).read_bytes()
    at = raw.index(struct.pack("<HH2sH", 0x0008, 0x1032, b"SQ", 0))
    path.write_bytes(raw[:at + 12 + 8 + 4])        # the element, its first item's header, 4 bytes
    return path


def deflate_bomb(path: Path) -> Path:
    """Twice the bound, from a file of about 130 KB; built once per directory (it takes
    a second or two to compress), so the tests that send it share it."""
    bomb = path.parent / "deflate-bomb.dcm"
    return bomb if bomb.exists() else f.deflated_xa(bomb, 2 * MAX_INFLATED_MB, size=512)


BROKEN = {
    # name: (builder, what ErrorComment says, can storescu send it?)
    "length-past-end": (length_past_end, "length 4294967280 runs past end of data", False),
    "nested-length-past-item": (nested_length_past_item, "runs past the end of its item", False),
    "deep-nesting": (deep_nesting, "sequences nested deeper than 64", False),
    "empty-pixel-data": (empty_pixel_data, "Pixel Data (7FE0,0010) is empty", True),
    "short-pixel-data": (short_pixel_data, "Pixel Data has 4000 bytes, attributes need 8192", True),
    "no-fragments": (no_fragments, "holds no fragment data", True),
    "deflate-bomb": (deflate_bomb, f"more than max_inflated_mb ({MAX_INFLATED_MB} MiB)", False),
    "sequence-cut-short": (sequence_cut_short, "not a readable DICOM dataset: No tag to read", False),
}


def sr_document(path: Path) -> Path:
    """Basic Text SR, Implicit VR: nested sequences, no pixel data."""
    ds = f.base_dataset(BASIC_TEXT_SR, modality="SR")
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "121070", "DCM", "Findings"
    ds.ConceptNameCodeSequence = [concept]
    text = Dataset()
    text.RelationshipType, text.ValueType, text.TextValue = "CONTAINS", "TEXT", "No stenosis."
    text.ConceptNameCodeSequence = [concept]
    ds.ContentSequence = [text]
    return f.write(ds, path, ImplicitVRLittleEndian)


def one_bit_image(path: Path) -> Path:
    """Three 61 x 61 frames of 1-bit pixels, packed across byte boundaries."""
    ds = f.base_dataset(f.SC)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 61
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit, ds.PixelRepresentation, ds.NumberOfFrames = 0, 0, 3
    bits = np.random.default_rng(1).integers(0, 2, 3 * 61 * 61, dtype=np.uint8)
    ds.PixelData = np.packbits(bits, bitorder="little").tobytes()
    return f.write(ds, path)


def ybr_full_422_native(path: Path) -> Path:
    """Native YBR_FULL_422, 3 samples: two values a pixel (PS3.5 8.2.1), 64 x 64 x 2
    bytes, less than 3 samples would need: sized right, not refused as short."""
    ds = f.base_dataset(f.SC)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(256)) * 32
    return f.write(ds, path)


SOUND = {
    "xa-run": lambda p: f.write(f.xa_run(frames=10, size=64), p),
    "ybr-full-422": ybr_full_422_native,
    "jpeg": lambda p: f.write(f.jpeg_baseline(size=64), p),
    "sr": sr_document,
    "one-bit": one_bit_image,
    "deflated-xa": lambda p: f.deflated_xa(p, 8, size=256),
}


# --- talking to the server -----------------------------------------------------------

def storescu(server, path: Path) -> tuple[int, str]:
    """storescu -d prints the response's status and its ErrorComment."""
    ts = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    # Propose the file's own syntax, so that what arrives is the file's bytes.
    own = {JPEGBaseline8Bit: ("-xy",), ImplicitVRLittleEndian: ("-xi",)}.get(ts, ())
    done = dcmtk("storescu", "-d", *own, "-aec", server.ae_title, "127.0.0.1", str(server.port),
                 str(path))
    out = done.stdout + done.stderr
    status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-f]{4})", out)
    assert status, out[-2000:]
    comment = re.search(r"\(0000,0902\) LO \[(.*?)\]", out)
    return int(status.group(1), 16), comment.group(1) if comment else ""


def file_meta(path: Path) -> dict[str, str]:
    """The File Meta values, without parsing the dataset (some of these cannot be)."""
    with open(path, "rb") as fh:
        fh.seek(132)
        return read_meta_group(fh)


def pynetdicom_store(server, path: Path) -> tuple[int, str]:
    """C-STORE a file's dataset bytes unchanged (dcmtk will not load these files)."""
    meta = file_meta(path)
    return store_unchanged(server.port, path, meta["MediaStorageSOPClassUID"],
                           meta["TransferSyntaxUID"], called=server.ae_title)


def stow(server, auth, path: Path) -> requests.Response:
    boundary = "validation-boundary-7"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode())
    return requests.post(server.url("/dicom-web/studies"), data=body, auth=auth, timeout=120,
                         headers={"Content-Type": f'multipart/related; type="application/dicom"; '
                                                  f"boundary={boundary}"})


def sop_uid(path: Path) -> str:
    return file_meta(path)["MediaStorageSOPInstanceUID"]


def stored(server, uid: str):
    with server_archive(server) as archive:
        return archive.index.find_instance(uid)


def files_in(server) -> list[Path]:
    return sorted(server.storage.glob("[0-9][0-9][0-9][0-9]/*/*/*.dcm"))


def staged(server) -> list[Path]:
    tmp = server.storage / ".tmp"
    return sorted(tmp.iterdir()) if tmp.is_dir() else []


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith(field + ":")).split()[1])


def logged(server, origin: str, reason: str) -> bool:
    """The ingest's refusal line for a store from ``origin`` (dicom, stow) names the reason."""
    return any("invalid-dataset" in line and f"from {origin}(" in line and reason in line
               for line in server.log().splitlines())


def peak_rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmHWM")


def reset_peak_rss(pid: int) -> int:
    """Start a new peak-RSS measurement (Linux: 5 into clear_refs); the RSS now, in kB."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")
    return _status_kb(pid, "VmRSS")


# --- refused -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", BROKEN)
def test_broken_dataset_refused_over_dimse(env, name):
    server, _, root = env
    build, reason, dcmtk_can_send = BROKEN[name]
    path = build(root / f"dimse-{name}.dcm")
    before = files_in(server)
    status, comment = (storescu if dcmtk_can_send else pynetdicom_store)(server, path)
    assert status == 0xC000, f"{name}: status 0x{status:04X} {comment}"
    assert reason in comment
    assert stored(server, sop_uid(path)) is None
    assert files_in(server) == before and staged(server) == []
    wait_until(lambda: logged(server, "dicom", reason), what="the refusal's log line")


@pytest.mark.parametrize("name", BROKEN)
def test_broken_dataset_refused_over_stow(env, name):
    server, auth, root = env
    path = BROKEN[name][0](root / f"stow-{name}.dcm")
    before = files_in(server)
    response = stow(server, auth, path)
    assert response.status_code == 409, response.text
    failed = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"] for item in failed] == [[0xC000]]
    assert stored(server, sop_uid(path)) is None
    assert files_in(server) == before and staged(server) == []
    wait_until(lambda: logged(server, "stow", BROKEN[name][1]), what="the refusal's log line")


def test_deflate_bomb_keeps_dicom_memory_bounded(env):
    """130 KB that inflate to 2 x max_inflated_mb: refused after inflating at most the
    bound, a chunk at a time. Inflated whole (as pydicom does) it would raise the DICOM
    process's peak RSS by the full 128 MiB; kept in a buffer, by the 64 MiB bound."""
    server, _, root = env
    bomb = deflate_bomb(root / "bomb.dcm")
    assert bomb.stat().st_size < 2**20
    pid = server.child_pid("dicom")
    before = reset_peak_rss(pid)
    status, comment = pynetdicom_store(server, bomb)
    assert status == 0xC000 and "max_inflated_mb" in comment
    grew_mib = (peak_rss_kb(pid) - before) / 1024
    assert grew_mib < 32, f"DICOM process peak RSS grew {grew_mib:.0f} MiB on a deflate bomb"


# --- accepted (no over-rejection) ------------------------------------------------------

@pytest.mark.parametrize("name", SOUND)
def test_sound_dataset_accepted_bit_exact(env, name):
    server, auth, root = env
    path = SOUND[name](root / f"sound-{name}.dcm")
    # dcmtk re-deflates what it sends; pynetdicom sends the deflated bytes as they are.
    send = pynetdicom_store if name.startswith("deflated") else storescu
    status, comment = send(server, path)
    assert status == 0x0000, f"{name}: 0x{status:04X} {comment}"
    row = stored(server, sop_uid(path))
    assert row is not None
    with open(server.storage / row.path, "rb") as fh:
        fh.seek(row.dataset_offset)
        assert fh.read() == f.dataset_bytes(path)


def test_undefined_length_un_is_walked_as_implicit_vr(tmp_path):
    """A sequence sent as UN with undefined length (a private sequence relayed by a
    system without its dictionary) holds Implicit VR items (PS3.5 6.2.2): sound."""
    from dsmpacs.archive.part10 import read_header
    from dsmpacs.archive.validation import dataset_problem

    path = f.write(f.secondary_capture(size=16), tmp_path / "un.dcm")
    text = b"SIEMENS "
    inner = struct.pack("<HHL", 0x0029, 0x1001, len(text)) + text          # implicit VR element
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    un = struct.pack("<HH2sHL", 0x0029, 0x1010, b"UN", 0, 0xFFFFFFFF) + item \
        + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    _insert_before_pixel_data(path, un)
    assert dataset_problem(path, read_header(path)) == ""
    # The same bytes read as Explicit VR would be garbage: the walk really follows PS3.5 6.2.2.
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"UN\x00\x00\xff\xff\xff\xff", b"SQ\x00\x00\xff\xff\xff\xff"))
    assert dataset_problem(path, read_header(path)) != ""


def test_the_walk_over_the_bytes_read_judges_as_the_walk_over_the_file(tmp_path):
    """C-STORE validates the bytes read_header read (Header.data, a file up to 256 KB),
    mostly in the parse's own pass (Header.walked, archive/scan.py), STOW-RS and
    import the staged file: every broken and sound case gets the same answer both
    ways, and a larger file is not held in memory."""
    from dataclasses import replace

    from dsmpacs.archive.part10 import InvalidDataset, read_header
    from dsmpacs.archive.validation import dataset_problem

    compared = refused = in_one_pass = 0
    for name, build in [*((n, b[0]) for n, b in BROKEN.items()), *SOUND.items()]:
        path = build(tmp_path / f"{name}.dcm")
        try:
            header = read_header(path)
        except InvalidDataset:
            continue                                    # refused before any walk, both ways
        assert header.data == path.read_bytes(), name
        answer = dataset_problem(path, replace(header, data=None))     # the walk over the file
        assert dataset_problem(path, header) == answer, name             # over the bytes read
        assert answer == "" or name in BROKEN, (name, answer)    # (the bomb's bound is the daemon's setting)
        compared += 1
        refused += answer != ""
        in_one_pass += header.walked is not None
    assert compared >= len(SOUND) + 5 and refused >= 5, (compared, refused)
    assert in_one_pass >= len(SOUND) + 2, in_one_pass
    big = f.write(f.xa_run(frames=2, size=512), tmp_path / "big.dcm")
    assert big.stat().st_size > 256 * 1024
    header = read_header(big)
    assert header.data is None and dataset_problem(big, header) == ""


def test_csa_non_image_accepted(env):
    server, _, root = env
    path = f.write(f.csa_non_image(payload_size=50_000), root / "csa.dcm")
    done = server.dcmsend(path)
    assert done.returncode == 0, done.stderr
    assert stored(server, sop_uid(path)) is not None


def test_deflated_run_renders_with_bounded_memory(env):
    """Rendering a late frame of a deflated run inflates up to it as a stream: the web
    process never holds the 60 MiB dataset (the old whole-file read did, twice)."""
    server, auth, root = env
    path = f.deflated_xa(root / "render.dcm", 60, size=512)
    assert pynetdicom_store(server, path)[0] == 0x0000
    ds = dcmread(path, stop_before_pixels=True)
    url = (f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/frames/{int(ds.NumberOfFrames)}/rendered")
    first = requests.get(server.url(url.replace(f"/frames/{int(ds.NumberOfFrames)}/", "/frames/1/")),
                         auth=auth, timeout=120, headers={"Accept": "image/png"})
    assert first.status_code == 200, first.text       # and the renderer's imports are done
    pid = server.child_pid("web")
    before = reset_peak_rss(pid)
    response = requests.get(server.url(url), auth=auth, timeout=120, headers={"Accept": "image/png"})
    assert response.status_code == 200, response.text
    assert response.content.startswith(b"\x89PNG")
    grew_mib = (peak_rss_kb(pid) - before) / 1024
    assert grew_mib < 32, f"web process peak RSS grew {grew_mib:.0f} MiB rendering one frame"


def test_rendering_refuses_a_stored_bomb(tmp_path):
    """A file stored before the bound existed (or under a larger one) is not rendered
    past the bound: a clear error, not a MemoryError."""
    from dsmpacs.archive import inflate
    from dsmpacs.imaging import render

    bomb = f.deflated_xa(tmp_path / "old-bomb.dcm", 40, size=256)
    inflate.set_limit(16 * 2**20)
    try:
        with pytest.raises(render.RenderError, match="max_inflated_mb"):
            render.render(bomb, 150)
    finally:
        inflate.set_limit(inflate.DEFAULT_LIMIT)


# --- import --------------------------------------------------------------------------

def run_import(settings, *args: str):
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "--set",
                                     f"database_url={settings.effective_database_url}",
                                     *args], catch_exceptions=False)


def test_dicomdir_reference_outside_the_medium_is_refused(settings, archive, tmp_path):
    media = tmp_path / "media"
    names = [f"DICOM/IMG{i}" for i in range(3)]
    for i, name in enumerate(names):
        f.write(f.ct_slice(size=32, instance_number=i), media / name)
    secret = f.write(f.secondary_capture(size=8), tmp_path / "outside" / "SECRET.DCM")
    linked = f.write(f.secondary_capture(size=8), tmp_path / "outside" / "LINKED.DCM")
    made = dcmtk("dcmmkdir", "+r", "-Pgp", "--invent", "+id", str(media), "+D", str(media / "DICOMDIR"),
                 *names, timeout=60, cwd=media)
    assert made.returncode == 0, made.stderr
    # Point one record up and out of the medium, and one at a symlink leading out of it.
    (media / "DICOM" / "IMG1").unlink()
    (media / "DICOM" / "IMG1").symlink_to(linked)
    dicomdir = dcmread(media / "DICOMDIR")
    images = [r for r in dicomdir.DirectoryRecordSequence if r.get("ReferencedFileID")]
    first = next(r for r in images if list(r.ReferencedFileID)[-1] == "IMG0")
    first.ReferencedFileID = ["..", "outside", "SECRET.DCM"]
    dicomdir.save_as(media / "DICOMDIR")

    result = run_import(settings, "import", str(media / "DICOMDIR"))
    assert "stored 1, duplicates 0, rejected 2" in result.output, result.output
    assert "leaves the medium's root" in result.output
    assert "resolves (symlink) outside the medium's root" in result.output
    assert archive.index.find_instance(sop_uid(secret)) is None
    assert archive.index.find_instance(sop_uid(linked)) is None


def test_zip_slip_entries_are_refused_and_the_rest_imported(settings, archive, tmp_path):
    good = f.write(f.secondary_capture(size=8), tmp_path / "good.dcm")
    evil = [f.write(f.secondary_capture(size=8), tmp_path / f"evil{i}.dcm") for i in range(3)]
    zipped = tmp_path / "upload.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(good, "IMG/good.dcm")
        z.write(evil[0], "../../evil.dcm")
        z.writestr(zipfile.ZipInfo("/etc/evil.dcm"), evil[1].read_bytes())   # write() strips the "/"
        z.write(evil[2], "IMG\\..\\..\\evil.dcm")
    result = run_import(settings, "import", str(zipped))
    assert "stored 1, duplicates 0, rejected 3" in result.output, result.output
    lines = result.output.splitlines()
    for kind in ("rejected ", "WARNING dsmpacs.archive.importer: import: refused"):   # answer, log
        assert sum(kind in line and "the ZIP entry name leaves the archive's root" in line
                   for line in lines) == 3, result.output
    assert archive.index.find_instance(sop_uid(good)) is not None
    assert all(archive.index.find_instance(sop_uid(p)) is None for p in evil)


def test_zip_bomb_is_refused_whole(settings, tmp_path):
    big = tmp_path / "zeros.dcm"
    shutil.copy(f.write(f.secondary_capture(size=8), tmp_path / "sc.dcm"), big)
    with open(big, "ab") as fh:
        fh.write(bytes(3 * 2**20))            # 3 MiB that deflate to a few KB
    zipped = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(big, "a.dcm")
    assert zipped.stat().st_size < 64 * 1024
    other = f.write(f.secondary_capture(size=8), tmp_path / "plain" / "other.dcm")
    result = run_import(settings, "--set", "zip_max_mb=2", "import", str(zipped), str(other.parent))
    assert "stored 1, duplicates 0, rejected 1" in result.output, result.output
    assert "more than 100000 entries or 2 MiB (zip_max_entries, zip_max_mb)" in result.output
