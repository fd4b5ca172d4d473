"""The UPS-RS event channel (PS3.18 8.10 Notifications): a WebSocket listener, in the
web process beside cheroot (which speaks no WebSocket), on ``ups_ws_port``.

A client opens ``/ws/subscribers/{AETitle}`` with an API token (``Authorization:
Bearer``, the tokens of docs/web.md), and receives as text frames, in DICOM JSON, the
event reports of the workitems its AE title is subscribed to
(archive/ups_subscriptions.py) that the token's user may see: a UPS State Report
(event 1) whenever a workitem's Procedure Step State changes, whoever changed it
(UPS-RS, the web worklist, a signed report, another process), and a UPS Assigned
event (5) when its performer changes. On connecting, and when a new subscription
appears, the client gets the current state of each open workitem it is subscribed
to (PS3.4 CC.2.4.2: the initial state reports).

Changes are found by reading the index (reading tasks changed since the last look,
every POLL_SECONDS while a channel is open, not at all otherwise), not from events
inside one process: a change made by the DICOM daemon or another web node is seen the
same way. What a client sends is ignored.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from urllib.parse import unquote

from websockets.asyncio.server import ServerConnection, serve

from dsmpacs.archive.models import Institution, Membership, ReadingTask, User, utcnow
from dsmpacs.archive.reading import UPS_STATE, Task
from dsmpacs.archive.ups_subscriptions import (
    ASSIGNED,
    FINAL_STATES,
    GLOBAL,
    Subscriptions,
    event_report,
    state_report,
)
from dsmpacs.archive.users import Account, Permission, Users
from dsmpacs.archive.visibility import Scope
from dsmpacs.settings import Settings, valid_ae_title

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# A clock step between processes, and MariaDB's whole-second DATETIME: look back this far
# and let the remembered states tell what is new.
LOOK_BACK = timedelta(seconds=2)
MAX_CLIENTS = 64
PATH = re.compile(r"^/ws/subscribers/([^/?#]{1,48})$")


def tasks_changed_since(since):
    """The reading tasks whose row changed at or after ``since``: the channel's look,
    twice a second, through the index on ``updated_at`` (schema 15)."""
    return ReadingTask.select().where(ReadingTask.updated_at >= since)


@dataclass(eq=False)
class Client:
    connection: ServerConnection
    ae_title: str
    account: Account
    secret: str = ""
    told: set = field(default_factory=set)     # (UID, time) of the subscriptions reported on connecting
    revoked: bool = False


class UpsNotifier:
    def __init__(self, settings: Settings, archive, ssl_context=None):
        self.settings = settings
        self.archive = archive
        self.index = archive.index
        self.subscriptions = Subscriptions(archive.index)
        self.users = Users(archive.index)
        self.ssl_context = ssl_context
        self.clients: set[Client] = set()
        self.server_address: tuple = ()
        self._known: dict[str, tuple[str, str]] = {}          # UPS UID -> (UPS state, assignee)
        self._announced: dict[tuple[str, str], datetime] = {}  # (AE, UID) -> subscription time reported
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- running ----------------------------------------------------------------
    def start(self) -> "UpsNotifier":
        ready, failure = threading.Event(), []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="ups-ws", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def _run(self, ready: threading.Event, failure: list) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(self._open())
            self.server_address = server.sockets[0].getsockname()[:2]
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        poller = loop.create_task(self._poll())
        try:
            loop.run_forever()
        finally:
            poller.cancel()
            server.close()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _open(self):
        # websockets' serve() wants the running loop when it is called, not only when awaited.
        return await serve(self._client, self.settings.web_host, self.settings.ups_ws_port,
                           ssl=self.ssl_context, process_request=self._authorize, max_size=4096,
                           server_header=None, open_timeout=self.settings.web_timeout)

    def shutdown(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    # --- who connects -------------------------------------------------------------
    async def _authorize(self, connection: ServerConnection, request):
        match = PATH.match(request.path)
        ae_title = unquote(match.group(1)) if match else ""
        if match is None or not valid_ae_title(ae_title):
            return connection.respond(HTTPStatus.NOT_FOUND, "no such channel: /ws/subscribers/{AETitle}\n")
        if len(self.clients) >= MAX_CLIENTS:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many event channels open\n")
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        account = (await asyncio.to_thread(self.users.authenticate_token, secret.strip())
                   if scheme.lower() == "bearer" else None)
        if account is None or not account.can(Permission.VIEW):
            address = str((connection.remote_address or ("",))[0])
            log.warning("UPS event channel from %s refused: %s", address,
                        "no valid API token" if account is None else f"{account.username} may not view")
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "an API token is needed (Bearer)\n")
            response.headers["WWW-Authenticate"] = 'Bearer realm="DSM PACS"'
            return response
        connection.dsmpacs_client = Client(connection, ae_title, account, secret.strip())
        return None

    async def _client(self, connection: ServerConnection) -> None:
        client: Client = connection.dsmpacs_client
        # What it is told on connecting, read before the poller can see it: never twice.
        client.told = await asyncio.to_thread(self.subscriptions.stamps, client.ae_title)
        if not self.clients:
            # The first channel since none was open (nothing was polled meanwhile): start
            # from the states as they are now, read before its own initial reports, so a
            # change in between is reported twice rather than never.
            await asyncio.to_thread(self._remember_all)
        self.clients.add(client)
        log.info("UPS event channel for %s opened by %s", client.ae_title, client.account.username)
        try:
            await self._initial(client, None)
            async for _ignored in connection:     # nothing is expected from the client
                pass
        finally:
            self.clients.discard(client)
            log.info("UPS event channel for %s closed", client.ae_title)

    # --- what it may see ---------------------------------------------------------
    def may_see(self, client: Client, task) -> bool:
        """The reading worklist's rule (web/reading/access.py), for a user without a request.
        ``task``: a Task or its ReadingTask row (the same attribute names)."""
        account = client.account
        if account.is_admin or task.assignee == account.username:
            return True
        with self.index.read():
            if task.institution and (Membership.select().join(Institution).switch(Membership).join(User)
                                     .where(User.username == account.username, Institution.code == task.institution,
                                            Membership.role == "institution-admin").exists()):
                return True
        scope = Scope.for_user(self.index, self.archive.grants, account.username)
        return scope.allows(task.study_instance_uid, self.index)

    # --- what happens --------------------------------------------------------------
    def _remember_all(self) -> None:
        with self.index.read():
            for row in ReadingTask.select(ReadingTask.ups_uid, ReadingTask.state, ReadingTask.assignee):
                self._known[row.ups_uid] = (UPS_STATE[row.state], row.assignee)
        self._checked = utcnow()

    def _changes(self) -> tuple[list[tuple[Task, bool, bool]], list[tuple[str, str, datetime]]]:
        """Tasks whose UPS state or performer changed since the last look (task, state
        changed, performer changed), and the subscriptions made since."""
        since = self._checked - LOOK_BACK
        self._checked = utcnow()
        with self.index.read():
            rows = list(tasks_changed_since(since))
        changed = []
        for row in rows:
            before = self._known.get(row.ups_uid)
            now = (UPS_STATE[row.state], row.assignee)
            if before != now:
                self._known[row.ups_uid] = now
                changed.append((self.archive.reading.get(row.id), before is None or before[0] != now[0],
                                before is not None and before[1] != now[1]))
        new = []
        for ae_title, uid, created in self.subscriptions.created_since(since):
            if self._announced.get((ae_title, uid)) != created:
                self._announced[(ae_title, uid)] = created
                new.append((ae_title, uid, created))
        if len(self._announced) > 10000:         # only the look-back window matters
            self._announced = {k: v for k, v in self._announced.items() if v >= since}
        return changed, new

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                if not self.clients:
                    continue             # nobody listens: no queries at all
                changed, new = await asyncio.to_thread(self._changes)
                for task, state_changed, assigned in changed:
                    await self._report(task, state_changed, assigned)
                for ae_title, uid, created in new:
                    # A client that connected after the subscription had its report then.
                    for client in [c for c in self.clients if c.ae_title == ae_title
                                   and (uid, created) not in c.told]:
                        await self._initial(client, uid)
            except Exception:
                log.exception("UPS event reports failed; trying again")

    async def _report(self, task: Task, state_changed: bool, assigned: bool) -> None:
        for client in list(self.clients):
            wanted = await asyncio.to_thread(self._wants, client, task)
            if client.revoked:
                log.info("UPS event channel for %s closed: its token is no longer valid", client.ae_title)
                await client.connection.close(1008, "the token is no longer valid")
                continue
            if not wanted:
                continue
            if state_changed:
                await self._send(client, state_report(task.ups_uid, task.ups_state))
            if assigned:
                await self._send(client, _assigned_report(task))

    def _wants(self, client: Client, task: Task) -> bool:
        if not self.subscriptions.is_subscribed(client.ae_title, task.ups_uid):
            return False
        # The token and its user are checked again before anything is sent (events are
        # human-paced: a query each is cheap): revoked, disabled or demoted, the channel closes.
        account = self.users.authenticate_token(client.secret)
        if account is None or not account.can(Permission.VIEW):
            client.revoked = True
            return False
        client.account = account
        return self.may_see(client, task)

    async def _initial(self, client: Client, uid: str | None) -> None:
        """State reports of the open workitems the client's AE is subscribed to (``uid``:
        a new subscription, the global one meaning all)."""
        def reports() -> list[dict]:
            everything, one_by_one, left_out = self.subscriptions.of(client.ae_title)
            with self.index.read():
                query = ReadingTask.select()
                if uid not in (None, GLOBAL):
                    query = query.where(ReadingTask.ups_uid == uid)
                elif not everything:
                    query = query.where(ReadingTask.ups_uid.in_(sorted(one_by_one) or [""]))
                rows = list(query)
            return [state_report(r.ups_uid, UPS_STATE[r.state]) for r in rows
                    if UPS_STATE[r.state] not in FINAL_STATES and r.ups_uid not in left_out
                    and (everything or r.ups_uid in one_by_one) and self.may_see(client, r)]
        for report in await asyncio.to_thread(reports):
            await self._send(client, report)

    async def _send(self, client: Client, report: dict) -> None:
        try:
            await client.connection.send(json.dumps(report, ensure_ascii=False))
        except Exception:           # closed meanwhile: its handler removes it
            log.debug("UPS event report to %s not sent", client.ae_title)


def _assigned_report(task: Task) -> dict:
    """Event 5: the workitem's Scheduled Human Performers Sequence, as UPS-RS shows it."""
    from dsmpacs.web.dicomweb.ups import dataset_of

    performers = dataset_of(task).get("00404034", {"vr": "SQ", "Value": []})
    return event_report(task.ups_uid, ASSIGNED, {"00404034": performers})


def start(settings: Settings, archive, ssl_context=None) -> UpsNotifier | None:
    """The channel when ups_ws_port is set (listening when this returns), else None."""
    if not settings.ups_ws_port:
        return None
    return UpsNotifier(settings, archive, ssl_context).start()
