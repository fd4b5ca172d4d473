"""Uploads (issue 9 item 8) against a real `dsmpacs serve --only web`: the caller is
authenticated and authorised before a byte of the body is read, a refused upload
ends with `Connection: close` and the server closes instead of reading the rest,
one STOW-RS holds one file open however many parts it has, the number of parts is
bounded while other users go on working, and compressed bodies are refused."""
from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest
import requests

from tests import factories as f
from tests import rawhttp
from tests.peers import ServerProcess
from tests.webclient import add_user, server_archive

MB = 2**20
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=BOUNDARY-uploads'


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("uploads")
    server = ServerProcess(root / "server", {"stow_max_mb": 700}, only="web").start()
    try:
        users = {"rad": ("rad1", add_user(server, "rad1", "radiologist")),
                 "viewer": ("view1", add_user(server, "view1", "viewer"))}
        yield server, users, root
    finally:
        server.stop()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) from /proc/<pid>/status; rchar/wchar (bytes the process read and wrote
    through read/write/recv/send calls, sockets included) from /proc/<pid>/io."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kb"] = int(line.split()[1])
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("rchar", "wchar"):
            out[name] = int(value)
    out["fds"] = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return out


def tmp_bytes(server) -> int:
    tmp = server.storage / ".tmp"
    return sum(p.stat().st_size for p in tmp.iterdir()) if tmp.is_dir() else 0


def basic(user: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()


def upload(server, path: str, headers: dict[str, str], body, **kw) -> rawhttp.RawResponse:
    return rawhttp.request("127.0.0.1", server.web_port, "POST", path, headers, body, **kw)


def assert_refused_unread(env, response, status: int, before: dict, total: int):
    server = env[0]
    after = proc_status(server.child_pid("web"))
    assert response.status == status, response
    assert response.headers.get("connection", "").lower() == "close"
    assert response.closed, "the server kept the connection (it would read the rest)"
    # The server read what the kernel buffered at most, never the upload.
    assert after["rchar"] - before["rchar"] < 16 * MB, (before, after)
    assert response.sent < total // 10
    assert after["wchar"] - before["wchar"] < 4 * MB          # no temp file written
    assert after["rss_kb"] - before["rss_kb"] < 20 * 1024     # memory did not grow with it
    assert tmp_bytes(server) == 0


def test_anonymous_600mb_stow_gets_401_before_its_body_is_read(env):
    server = env[0]
    total = 600 * MB
    before = proc_status(server.child_pid("web"))
    response = upload(server, "/dicom-web/studies",
                      {"Content-Type": STOW_TYPE, "Content-Length": str(total)}, rawhttp.zeros(total))
    assert_refused_unread(env, response, 401, before, total)
    assert response.seconds < 5, response.seconds
    assert "realm" in response.headers.get("www-authenticate", "")


def test_chunked_and_expect_continue_uploads_are_refused_unread(env):
    server = env[0]
    total = 600 * MB

    def chunked(n):
        for block in rawhttp.zeros(n):
            yield b"%x\r\n%s\r\n" % (len(block), block)
        yield b"0\r\n\r\n"

    before = proc_status(server.child_pid("web"))
    response = upload(server, "/dicom-web/studies",
                      {"Content-Type": STOW_TYPE, "Transfer-Encoding": "chunked"}, chunked(total))
    assert_refused_unread(env, response, 401, before, total)

    # Expect: 100-continue: the go-ahead never comes for a caller who is refused.
    before = proc_status(server.child_pid("web"))
    response = upload(server, "/dicom-web/studies",
                      {"Content-Type": STOW_TYPE, "Content-Length": str(total), "Expect": "100-continue"},
                      rawhttp.zeros(total))
    assert response.interim == []
    assert_refused_unread(env, response, 401, before, total)


def test_a_user_who_may_not_store_gets_403_before_the_body(env):
    server, users, _ = env
    total = 600 * MB
    before = proc_status(server.child_pid("web"))
    response = upload(server, "/dicom-web/studies",
                      {"Content-Type": STOW_TYPE, "Content-Length": str(total),
                       "Authorization": basic(users["viewer"])}, rawhttp.zeros(total))
    assert_refused_unread(env, response, 403, before, total)


def test_any_other_route_refuses_unread_too(env):
    server = env[0]
    total = 300 * MB
    for path, status in (("/admin/users", 401),       # anonymous: not signed in
                         ("/login", 413)):            # public, but no form is that large
        before = proc_status(server.child_pid("web"))
        response = upload(server, path, {"Content-Type": "application/x-www-form-urlencoded",
                                         "Content-Length": str(total), "Accept": "text/html"},
                          rawhttp.zeros(total))
        assert_refused_unread(env, response, status, before, total)


def test_content_encoding_is_refused(env):
    server, users, root = env
    path = f.write(f.secondary_capture(size=8), root / "enc.dcm")
    body = (b"--BOUNDARY-uploads\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes()
            + b"\r\n--BOUNDARY-uploads--\r\n")
    for encoding in ("gzip", "deflate", "br"):
        refused = requests.post(server.url("/dicom-web/studies"), data=body, auth=users["rad"], timeout=20,
                                headers={"Content-Type": STOW_TYPE, "Content-Encoding": encoding})
        assert refused.status_code == 415, (encoding, refused.text)
        assert "Content-Encoding" in refused.json()["detail"]
    anonymous = requests.post(server.url("/dicom-web/studies"), data=body, timeout=20,
                              headers={"Content-Type": STOW_TYPE, "Content-Encoding": "gzip"})
    assert anonymous.status_code == 401
    stored = requests.post(server.url("/dicom-web/studies"), data=body, auth=users["rad"], timeout=20,
                           headers={"Content-Type": STOW_TYPE, "Content-Encoding": "identity"})
    assert stored.status_code == 200, stored.text


def _many_parts(part: bytes, count: int):
    head = b"--BOUNDARY-uploads\r\nContent-Type: application/dicom\r\n\r\n"
    for i in range(count):
        yield (b"" if i == 0 else b"\r\n") + head + part
    yield b"\r\n--BOUNDARY-uploads--\r\n"


def test_40000_part_stow_is_refused_while_other_users_work(env):
    server, users, root = env
    part = f.write(f.secondary_capture(size=8), root / "tiny.dcm").read_bytes()
    with server_archive(server) as archive:
        stored_before = archive.index.instance_count()
    others = [(f"other{i}", add_user(server, f"other{i}", "radiologist")) for i in range(3)]
    web_pid = server.child_pid("web")
    result: dict = {}
    fds: list[int] = []

    def big():
        result["big"] = upload(server, "/dicom-web/studies",
                               {"Content-Type": STOW_TYPE, "Authorization": basic(users["rad"]),
                                "Transfer-Encoding": "chunked"},
                               (b"%x\r\n%s\r\n" % (len(p), p) for p in _many_parts(part, 40000)),
                               timeout=300)

    failures: list[str] = []
    done = threading.Event()

    def other(user, n):
        session = requests.Session()
        session.auth = user
        own = f.write(f.secondary_capture(size=8, patient=f.Patient(patient_id=f"OTHER{n}")),
                      root / f"other{n}.dcm").read_bytes()
        body = (b"--BOUNDARY-uploads\r\nContent-Type: application/dicom\r\n\r\n" + own
                + b"\r\n--BOUNDARY-uploads--\r\n")
        rounds = 0
        while not done.is_set() or rounds < 3:
            for response in (session.post(server.url("/dicom-web/studies"), data=body, timeout=30,
                                          headers={"Content-Type": STOW_TYPE}),
                             session.get(server.url("/dicom-web/studies"), timeout=30)):
                if response.status_code != 200:
                    failures.append(f"{user[0]}: {response.status_code} {response.text[:200]}")
            rounds += 1

    uploader = threading.Thread(target=big)
    workers = [threading.Thread(target=other, args=(user, n)) for n, user in enumerate(others)]
    started = time.monotonic()
    uploader.start()
    for w in workers:
        w.start()
    while uploader.is_alive():
        fds.append(proc_status(web_pid)["fds"])
        uploader.join(0.05)
    done.set()
    for w in workers:
        w.join(120)
    response = result["big"]
    assert response.status == 413, response
    assert "stow_max_parts (10000)" in response.body.decode()
    assert response.closed
    assert failures == []
    # One request keeps one part file open, not one per part (before: one per part).
    assert max(fds) < 60, max(fds)
    assert tmp_bytes(server) == 0
    with server_archive(server) as archive:
        # Nothing of the refused request; the other users' instances (one each) are there.
        assert archive.index.instance_count() == stored_before + len(others)
    print(f"40000-part STOW refused in {time.monotonic() - started:.1f} s; "
          f"web process fds at most {max(fds)}")
