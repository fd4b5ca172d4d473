"""The domain objects one web process uses, built once in create_app."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from dsmpacs import configfile
from dsmpacs.archive import Archive
from dsmpacs.archive.activity import Activity
from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.peers import PeerRegistry
from dsmpacs.archive.sessions import Sessions
from dsmpacs.archive.statistics import Statistics
from dsmpacs.archive.totp import SecondFactor, roles_requiring
from dsmpacs.archive.users import Users
from dsmpacs.settings import Settings
from dsmpacs.web.ratelimit import LoginThrottle

EXTENSION = "dsmpacs"


@dataclass
class Services:
    settings: Settings
    archive: Archive
    users: Users
    audit: AuditTrail
    activity: Activity
    statistics: Statistics
    peers: PeerRegistry
    throttle: LoginThrottle
    sessions: Sessions
    second_factor: SecondFactor
    # config.toml as read when this process started: tells a value changed since
    # (effective at the next start) from one set on the command line.
    config_at_start: dict

    @classmethod
    def build(cls, settings: Settings, archive: Archive) -> "Services":
        roles_requiring(settings.require_totp_roles)       # refuse a typo at start, not later
        return cls(settings=settings, archive=archive, users=Users(archive.index),
                   audit=AuditTrail.of(archive), activity=Activity(archive.index),
                   statistics=Statistics(archive.index), peers=PeerRegistry(archive.index),
                   throttle=LoginThrottle.from_settings(settings),
                   sessions=Sessions.from_settings(archive.index, settings),
                   second_factor=SecondFactor(archive.index),
                   config_at_start=configfile.read_values(settings))


    def scope(self):
        """The current user's Scope (archive/visibility.py), built once per request:
        what every route asks before serving a study."""
        from flask import g

        from dsmpacs.archive.visibility import Scope
        from dsmpacs.web.auth import current_user

        cached = g.get("scope")
        if cached is None:
            user = current_user()
            cached = (Scope.nothing() if user is None
                      else Scope.for_user(self.archive.index, self.archive.grants, user.username))
            g.scope = cached
        return cached


def services() -> Services:
    return current_app.extensions[EXTENSION]
