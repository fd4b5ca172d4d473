"""Believe X-Forwarded-For and X-Forwarded-Proto from the trusted reverse proxy only.

Behind DSM's reverse proxy (nginx on the same NAS, web_trusted_proxy=127.0.0.1) the
web server sees every request come from 127.0.0.1 over plain HTTP; the client's
address and scheme arrive in X-Forwarded-For (nginx's $proxy_add_x_forwarded_for:
what the client sent, then the address nginx saw) and X-Forwarded-Proto. From that
proxy, werkzeug's ProxyFix takes the last X-Forwarded-For value (the one the
proxy itself appended; earlier ones are the client's word) and the scheme, so
rate limits, sessions and the audit trail see the real client and HTTPS. From
any other address the forwarding headers are removed before the app sees them:
a client cannot claim another address, or HTTPS, by sending them itself.
"""
from __future__ import annotations

import ipaddress

from werkzeug.middleware.proxy_fix import ProxyFix

FORWARDING = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
              "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


def _address(value: str) -> str:
    """The canonical form of an address (an IPv4 client of an IPv6 socket as IPv4)."""
    try:
        ip = ipaddress.ip_address(value.strip().split("%")[0])
    except ValueError:
        return value.strip()
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


class TrustedProxy:
    """WSGI middleware; see the module docstring."""

    def __init__(self, app, trusted: str):
        self.app = app
        self.trusted = _address(trusted) if trusted else ""
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=0, x_port=0, x_prefix=0)

    def __call__(self, environ, start_response):
        if self.trusted and _address(environ.get("REMOTE_ADDR", "")) == self.trusted:
            return self.fixed(environ, start_response)
        for name in FORWARDING:
            environ.pop(name, None)
        return self.app(environ, start_response)
