"""The registry of remote AEs, kept in the index so the web UI can manage it."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

import peewee

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import RemoteAE, utcnow
from dsmpacs.settings import valid_ae_title

_SPEC_RE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})$")


# A peer known by its AE title alone (the DSM install wizard registers a modality so,
# when the administrator does not give its address): it may come from any address,
# and having no address or port of its own it can never be sent to.
ANY_HOST = "*"
NO_PORT = 0


class PeerError(ValueError):
    """A registry entry is invalid or does not exist. ``code`` names the problem and
    ``params`` its values, so that a user interface can say it in its own words."""

    def __init__(self, message: str, code: str = "invalid", **params):
        super().__init__(message)
        self.code, self.params = code, params


@dataclass(frozen=True)
class Peer:
    name: str
    ae_title: str
    host: str
    port: int
    may_store: bool = True
    may_find: bool = True
    may_retrieve: bool = True
    is_move_destination: bool = True
    tls: bool = False                # associations both ways use TLS; the plain port refuses it
    tls_client_cert: bool = False    # on the TLS port it must show a verified client certificate
    description: str = ""

    def validate(self) -> None:
        if not self.name or len(self.name) > 64:
            raise PeerError("name must be 1-64 characters", "name")
        if not valid_ae_title(self.ae_title):
            raise PeerError(f"{self.ae_title!r} is not a valid AE title", "ae_title", value=self.ae_title)
        if not self.host or len(self.host) > 255 or any(c.isspace() for c in self.host):
            raise PeerError(f"{self.host!r} is not a host name or address", "host", value=self.host)
        if not 0 <= int(self.port) <= 65535:
            raise PeerError(f"port {self.port} is outside 1-65535", "port", value=self.port)
        if self.tls_client_cert and not self.tls:
            raise PeerError("a client certificate can only be required of a remote AE marked TLS", "client_cert")
        if not self.reachable and self.is_move_destination:
            raise PeerError(f"{self.ae_title} has no host and port to send to, so it cannot be "
                            "a move destination", "not_reachable", value=self.ae_title)

    @property
    def reachable(self) -> bool:
        """It has an address and a port this archive can connect to."""
        return self.host != ANY_HOST and self.port != NO_PORT

    @classmethod
    def parse(cls, spec: str) -> "Peer":
        """An ad-hoc peer from ``AE@HOST:PORT`` (not registered)."""
        m = _SPEC_RE.match(spec.strip())
        if not m:
            raise PeerError(f"{spec!r} is neither a registered remote AE nor AE@HOST:PORT")
        peer = cls(name=spec.strip(), ae_title=m["aet"], host=m["host"].strip("[]"), port=int(m["port"]))
        peer.validate()
        return peer

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def from_row(cls, row: RemoteAE) -> "Peer":
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


class PeerRegistry:
    def __init__(self, index: Index):
        self.index = index

    def list(self) -> list[Peer]:
        with self.index.read():
            return [Peer.from_row(r) for r in RemoteAE.select().order_by(RemoteAE.name)]

    def get(self, name: str) -> Peer | None:
        with self.index.read():
            row = RemoteAE.get_or_none(RemoteAE.name == name)
        return Peer.from_row(row) if row else None

    def by_ae_title(self, ae_title: str) -> list[Peer]:
        """Every entry with this AE title (one AE title may be registered for several hosts)."""
        with self.index.read():
            return [Peer.from_row(r) for r in RemoteAE.select()
                    .where(RemoteAE.ae_title == ae_title.strip()).order_by(RemoteAE.name)]

    def resolve(self, spec: str) -> Peer:
        """A registered name, or ``AE@HOST:PORT``. An ``AE@HOST:PORT`` that is a registered
        entry is that entry, so its TLS flag holds (no plaintext by spelling it out)."""
        named = self.get(spec)
        if named is not None:
            return named
        parsed = Peer.parse(spec)
        return next((p for p in self.by_ae_title(parsed.ae_title)
                     if (p.host, p.port) == (parsed.host, parsed.port)), parsed)

    def move_destination(self, ae_title: str) -> Peer | None:
        """The registered entry C-MOVE may send to, or None (answered with 0xA801)."""
        return next((p for p in self.by_ae_title(ae_title) if p.is_move_destination), None)

    def add(self, peer: Peer) -> Peer:
        peer.validate()
        try:
            with self.index.write():
                RemoteAE.create(**asdict(peer))
        except peewee.IntegrityError:
            raise PeerError(f"a remote AE named {peer.name!r} already exists", "exists", value=peer.name) from None
        return peer

    def update(self, name: str, **changes) -> Peer:
        current = self.get(name)
        if current is None:
            raise PeerError(f"no remote AE named {name!r}", "unknown", value=name)
        updated = Peer(**{**asdict(current), **changes})
        updated.validate()
        with self.index.write():
            RemoteAE.update(**asdict(updated), updated_at=utcnow()).where(RemoteAE.name == name).execute()
        return updated

    def remove(self, name: str) -> bool:
        with self.index.write():
            return RemoteAE.delete().where(RemoteAE.name == name).execute() > 0
