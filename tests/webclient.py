"""Talking to the web server of a real `dsmpacs serve` process with `requests`.

    from tests.webclient import WebSession, add_user
    password = add_user(server, "rad1", "radiologist")
    web = WebSession(server)
    web.login("rad1", password)
    page = web.get("/admin/storage")
    web.post_form("/admin/peers", {...})          # sends the page's CSRF token

Users are created directly in the server's index (the same database the
server uses), the way `dsmpacs user add` does it.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

import requests

from dsmpacs.archive import Archive
from dsmpacs.settings import Settings

CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


@contextmanager
def server_archive(server) -> Iterator[Archive]:
    """The server's archive, opened beside it as another process would."""
    settings = Settings.load(data_dir=server.data_dir, env={}, overrides=dict(server.sets))
    archive = Archive(settings)
    archive.open()
    try:
        yield archive
    finally:
        archive.close()


def add_user(server, username: str, role: str, password: str = "correct horse battery") -> str:
    from dsmpacs.archive.users import Users

    with server_archive(server) as archive:
        Users(archive.index).add(username, password, role)
    return password


class WebSession(requests.Session):
    """A browser-like session against ``server.web_url``: relative URLs, the
    CSRF token taken from the last HTML page, HTML preferred."""

    def __init__(self, server):
        super().__init__()
        self.base = server.web_url
        self.headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"
        self.csrf_token = ""

    def request(self, method, url, *args, **kwargs):
        if url.startswith("/"):
            url = self.base + url
        kwargs.setdefault("timeout", 30)
        response = super().request(method, url, *args, **kwargs)
        found = CSRF_RE.search(response.text) if "html" in response.headers.get("Content-Type", "") else None
        if found:
            self.csrf_token = found.group(1)
        return response

    def token_for(self, path: str = "/login") -> str:
        self.get(path)
        return self.csrf_token

    def post_form(self, path: str, data: dict, *, token: bool = True, **kwargs) -> requests.Response:
        if token:
            if not self.csrf_token:
                self.token_for("/login")
            data = {**data, "csrf_token": self.csrf_token}
        return self.post(path, data=data, allow_redirects=kwargs.pop("allow_redirects", False), **kwargs)

    def login(self, username: str, password: str) -> requests.Response:
        self.token_for("/login")
        response = self.post_form("/login", {"username": username, "password": password, "next": "/"})
        assert response.status_code == 302, f"login as {username} failed: {response.status_code}"
        return response


# --- the Flask test client (unit-level view tests, no server process) ---------------
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_user(archive, username: str, role: str, password: str = "correct horse battery") -> str:
    from dsmpacs.archive.users import Users

    Users(archive.index).add(username, password, role)
    return password


def client_csrf(client, path: str = "/login") -> str:
    """The session's CSRF token, read from a page like a browser would."""
    page = client.get(path, headers={"Accept": "text/html"})
    found = TOKEN_RE.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {path} ({page.status_code})"
    return found.group(1)


def client_login(client, username: str, password: str = "correct horse battery", **extra):
    token = client_csrf(client)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token,
                                       "next": "/", **extra})


def client_as(client, archive, role: str, username: str | None = None):
    """Create a user with ``role``, sign the test client in; returns the username."""
    username = username or f"{role}1"
    make_user(archive, username, role)
    response = client_login(client, username)
    assert response.status_code == 302, response.status_code
    return username
