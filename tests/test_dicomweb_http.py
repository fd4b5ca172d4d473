"""DICOMweb over raw HTTP against a real `dsmpacs serve --only web`: content
negotiation, status codes, limits, STOW failures and WADO-URI."""
from __future__ import annotations

import pydicom
import pytest
import requests

from dsmpacs.archive.ingest import Origin
from tests import factories as f
from tests.peers import ServerProcess
from tests.webclient import add_user, server_archive

DICOM_TS_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicomweb-http")
    server = ServerProcess(root / "server", {"stow_max_mb": 1, "query_limit": 3}, only="web").start()
    try:
        users = {"rad": ("rad1", add_user(server, "rad1", "radiologist")),
                 "viewer": ("view1", add_user(server, "view1", "viewer"))}
        with server_archive(server) as archive:
            files = {"sc": f.write(f.secondary_capture(size=16, patient=f.Patient(patient_id="HTTP1")),
                                   root / "sc.dcm"),
                     "jpeg": f.write(f.jpeg_baseline(size=32, patient=f.Patient(patient_id="HTTP2")),
                                     root / "jpeg.dcm")}
            for i in range(4):
                files[f"many{i}"] = f.write(f.secondary_capture(size=8, patient=f.Patient(patient_id="MANY")),
                                            root / f"many{i}.dcm")
            for path in files.values():
                assert archive.ingest.import_file(path, Origin("import")).archived
        yield server, users, files
    finally:
        server.stop()


def get(env, path, role="rad", **kw):
    server, users, _ = env
    kw.setdefault("timeout", 20)
    return requests.get(server.url(path), auth=users[role] if role else None, **kw)


def post(env, path, body, content_type, role="rad"):
    server, users, _ = env
    return requests.post(server.url(path), data=body, headers={"Content-Type": content_type},
                         auth=users[role] if role else None, timeout=20)


def instance_path(path) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def stored_file(env, path):
    server = env[0]
    with server_archive(server) as archive:
        row = archive.index.find_instance(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        return archive.storage.path(row.path)


def parts(response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part, split by hand (independent of the server's code)."""
    ctype = response.headers["Content-Type"]
    assert ctype.startswith("multipart/related"), ctype
    boundary = ctype.split("boundary=")[1].split(";")[0].strip('"').encode()
    out = []
    for chunk in response.content.split(b"\r\n--" + boundary)[:-1]:
        chunk = chunk[len(b"--" + boundary) + 2:] if chunk.startswith(b"--" + boundary) else chunk[2:]
        head, body = chunk.split(b"\r\n\r\n", 1)
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        out.append((headers["Content-Type"], body))
    assert response.content.endswith(b"\r\n--" + boundary + b"--\r\n")
    return out


def instance_count(env) -> int:
    with server_archive(env[0]) as archive:
        return archive.index.instance_count()


# --- WADO-RS negotiation ------------------------------------------------------------
@pytest.mark.parametrize("accept", [
    'multipart/related; type="application/dicom"',
    "multipart/related; type=application/dicom; transfer-syntax=*",
    "*/*",
    "multipart/*",
    # the first alternative cannot be produced (no encoding into JPEG 2000): the second is taken
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90, ' + DICOM_TS_ANY,
])
def test_instance_is_the_stored_file_byte_for_byte(env, accept):
    response = get(env, instance_path(env[2]["jpeg"]), headers={"Accept": accept})
    assert response.status_code == 200, response.text
    [(ctype, body)] = parts(response)
    assert ctype == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert body == stored_file(env, env[2]["jpeg"]).read_bytes()
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_accept_query_parameter_and_406(env):
    path = instance_path(env[2]["sc"])
    via_query = get(env, path + "?accept=" + requests.utils.quote(DICOM_TS_ANY),
                    headers={"Accept": "application/zip"})
    assert via_query.status_code == 200
    refused = get(env, path, headers={"Accept": "application/zip"})
    assert refused.status_code == 406 and "application/dicom" in refused.json()["detail"]


def test_another_syntax_only_by_lossless_conversion(env):
    path = instance_path(env[2]["jpeg"])
    explicit = get(env, path, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                 "transfer-syntax=1.2.840.10008.1.2.1"})
    assert explicit.status_code == 200
    [(ctype, body)] = parts(explicit)
    assert ctype == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    decoded = pydicom.dcmread(pydicom.filebase.DicomBytesIO(body))
    assert decoded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert len(decoded.PixelData) == 32 * 32
    jls = get(env, path, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                            "transfer-syntax=1.2.840.10008.1.2.4.80"})
    assert jls.status_code == 406


def test_frames_as_cornerstone_asks(env):
    response = get(env, instance_path(env[2]["jpeg"]) + "/frames/1",
                   headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    [(ctype, body)] = parts(response)
    assert ctype == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert body[:2] == b"\xff\xd8" and body.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    missing = get(env, instance_path(env[2]["jpeg"]) + "/frames/2")
    assert missing.status_code == 404
    assert get(env, instance_path(env[2]["jpeg"]) + "/frames/0").status_code == 400


def test_rendered_and_thumbnail(env):
    base = instance_path(env[2]["sc"])
    jpeg = get(env, base + "/rendered")
    assert jpeg.status_code == 200 and jpeg.headers["Content-Type"] == "image/jpeg"
    assert jpeg.content[:2] == b"\xff\xd8"
    png = get(env, base + "/thumbnail", headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert get(env, base + "/rendered", headers={"Accept": "image/gif"}).status_code == 406


# --- QIDO-RS --------------------------------------------------------------------------
def test_search_statuses(env):
    assert get(env, "/dicom-web/studies?PatientID=NOBODY").status_code == 204
    bad = get(env, "/dicom-web/studies?NoSuchKey=1")
    assert bad.status_code == 400 and "NoSuchKey" in bad.json()["detail"]
    assert get(env, "/dicom-web/studies?limit=-1").status_code == 400
    assert get(env, "/dicom-web/studies?SOPInstanceUID=1.2.3").status_code == 400   # below the level
    tag_form = get(env, "/dicom-web/studies?00100020=HTTP*&includefield=all").json()
    assert sorted(s["00100020"]["Value"][0] for s in tag_form) == ["HTTP1", "HTTP2"]
    assert all("00100040" in s for s in tag_form)


def test_server_limit_is_signalled_and_paging_continues(env):
    first = get(env, "/dicom-web/instances?PatientID=MANY")
    assert len(first.json()) == 3 and "Warning" in first.headers        # query_limit = 3
    rest = get(env, "/dicom-web/instances?PatientID=MANY&offset=3")
    assert len(rest.json()) == 1 and "Warning" not in rest.headers


# --- auth -------------------------------------------------------------------------------
def test_anonymous_gets_401_with_a_challenge(env):
    response = get(env, "/dicom-web/studies", role=None, headers={"Accept": "application/dicom+json"})
    assert response.status_code == 401 and "Basic" in response.headers["WWW-Authenticate"]
    assert get(env, instance_path(env[2]["sc"]) + "/metadata", role=None).status_code == 401


def test_viewer_may_search_but_not_store(env):
    assert get(env, "/dicom-web/studies?PatientID=HTTP1", role="viewer").status_code == 200
    body, ctype = stow_body([env[2]["sc"]])
    refused = post(env, "/dicom-web/studies", body, ctype, role="viewer")
    assert refused.status_code == 403


# --- STOW-RS ------------------------------------------------------------------------------
def stow_body(files, boundary="XyZ-boundary-42") -> tuple[bytes, str]:
    chunks = []
    for path in files:
        data = path if isinstance(path, bytes) else path.read_bytes()
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), \
        f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_stow_reports_each_failure(env, tmp_path):
    good = f.write(f.secondary_capture(size=8), tmp_path / "good.dcm")
    body, ctype = stow_body([good, b"not a dicom file at all"])
    response = post(env, "/dicom-web/studies", body, ctype)
    assert response.status_code == 202
    result = response.json()
    assert len(result["00081199"]["Value"]) == 1
    assert result["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]

    other = f.write(f.secondary_capture(size=8), tmp_path / "other.dcm")
    mismatch = post(env, "/dicom-web/studies/1.2.826.0.1.99", *stow_body([other]))
    assert mismatch.status_code == 409
    assert mismatch.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]

    changed = pydicom.dcmread(good)
    changed.PatientID = "SOMEONE ELSE"
    conflict = f.write(changed, tmp_path / "conflict.dcm")
    again = post(env, "/dicom-web/studies", *stow_body([conflict]))
    assert again.status_code == 409
    assert again.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]


def test_malformed_or_oversized_uploads_store_nothing(env, tmp_path):
    before = instance_count(env)
    good = f.write(f.secondary_capture(size=8), tmp_path / "good.dcm")
    body, ctype = stow_body([good, good])
    truncated = post(env, "/dicom-web/studies", body[:-40], ctype)
    assert truncated.status_code == 400 and "multipart" in truncated.json()["detail"]
    no_boundary = post(env, "/dicom-web/studies", body, 'multipart/related; type="application/dicom"')
    assert no_boundary.status_code == 400
    wrong_type = post(env, "/dicom-web/studies", body, "application/dicom")
    assert wrong_type.status_code == 415
    big = f.write(f.secondary_capture(size=1100), tmp_path / "big.dcm")     # > stow_max_mb = 1
    too_big = post(env, "/dicom-web/studies", *stow_body([good, big]))
    assert too_big.status_code == 413
    assert instance_count(env) == before
    server = env[0]
    assert not any(p.suffix == ".stow" for p in (server.storage / ".tmp").iterdir())


# --- WADO-URI -------------------------------------------------------------------------------
def test_wado_uri(env):
    ds = pydicom.dcmread(env[2]["sc"], stop_before_pixels=True)
    query = f"requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}" \
            f"&objectUID={ds.SOPInstanceUID}"
    original = get(env, f"/wado?{query}&contentType=application/dicom")
    assert original.status_code == 200 and original.headers["Content-Type"] == "application/dicom"
    assert original.content == stored_file(env, env[2]["sc"]).read_bytes()
    picture = get(env, f"/wado?{query}")
    assert picture.headers["Content-Type"] == "image/jpeg" and picture.content[:2] == b"\xff\xd8"
    assert get(env, f"/wado?requestType=WADO&studyUID={ds.StudyInstanceUID}").status_code == 400
    assert get(env, f"/wado?{query}", role=None).status_code == 401


def test_errors_are_logged(env):
    get(env, "/dicom-web/studies?NoSuchKeyToLog=1")
    log = (env[0].data_dir / "logs" / "dsmpacs-web.log")
    from tests.peers import wait_until
    wait_until(lambda: "NoSuchKeyToLog" in log.read_text(errors="replace"), timeout=10, what="error in the log")


@pytest.mark.parametrize("syntax, old_name, current, magic", [
    ("1.2.840.10008.1.2.5", "image/x-dicom-rle", "image/dicom-rle", b"\x01\x00\x00\x00"),
    ("1.2.840.10008.1.2.4.80", "image/x-jls", "image/jls", b"\xff\xd8\xff\xf7"),
])
def test_earlier_media_type_names_are_accepted(env, tmp_path, syntax, old_name, current, magic):
    """OHIF's JavaScript dicomweb-client still asks for frames by the names PS3.18 had
    before 2018; each is served as the current name with the stored codestream."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = f.secondary_capture(size=16, patient=f.Patient(patient_id="ALIAS"))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(syntax)
    path = f.write(ds, tmp_path / "compressed.dcm", transfer_syntax=syntax)
    stored = post(env, "/dicom-web/studies", *stow_body([path]))
    assert stored.status_code == 200, stored.text
    response = get(env, instance_path(path) + "/frames/1",
                   headers={"Accept": f'multipart/related; type="{old_name}"'})
    assert response.status_code == 200, response.text
    [(ctype, body)] = parts(response)
    assert ctype.startswith(current) and f"transfer-syntax={syntax}" in ctype
    assert body.startswith(magic)
