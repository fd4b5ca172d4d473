"""Creating the index database and its user in Synology's MariaDB 10, at installation.

DSM's own way, the `mariadb10-db` resource worker, is provided by the MariaDB10
package: a package that declares it must depend on MariaDB10, and conf/resource
cannot declare it only when the wizard chose MariaDB (docs/dsm-package.md). So
DSM PACS does the worker's job itself, in postinst, only when the administrator
asked for it: over MariaDB 10's local socket (TCP is off by default on DSM, and
an installation has no network), with the administrator account and password
from the wizard, which are used for this and kept nowhere.
"""
from __future__ import annotations

from dataclasses import dataclass


class MariaDBError(Exception):
    """Why the database or the user could not be made, worded for the administrator."""


@dataclass(frozen=True)
class Request:
    socket: str            # MariaDB 10's Unix socket
    admin_user: str        # an account that may create databases and users (DSM: root)
    admin_password: str
    database: str          # [A-Za-z0-9_]{1,64}: checked by the wizard's rules
    user: str              # [A-Za-z0-9_]{1,32}
    password: str
    host: str = "127.0.0.1"   # DSM PACS connects over TCP to the address it was given


def create(request: Request) -> list[str]:
    """Create the database (kept if it exists, as the worker's db-collision "skip") and the
    user (an existing one keeps its password: it may serve another application), and grant
    the user every right on the database. Returns what was done, for the log."""
    import pymysql

    for name in (request.database, request.user):
        if not name or not all(c.isalnum() or c == "_" for c in name) or not name.isascii():
            raise MariaDBError(f"MariaDB: {name!r} is not a plain name")
    try:
        conn = pymysql.connect(unix_socket=request.socket, user=request.admin_user,
                               password=request.admin_password, autocommit=True,
                               connect_timeout=10, charset="utf8mb4")
    except pymysql.MySQLError as exc:
        raise MariaDBError(f"MariaDB 10 refused the administrator {request.admin_user!r} on "
                           f"{request.socket}: {exc.args[-1]}. Check the MariaDB root password "
                           f"entered in the wizard.") from None
    done = []
    account = f"'{request.user}'@'{request.host}'"
    try:
        with conn.cursor() as cur:
            created = cur.execute(f"CREATE DATABASE IF NOT EXISTS `{request.database}` "
                                  "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            done.append(f"database {request.database}: " + ("created" if created else "kept"))
            cur.execute("SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = %s",
                        (request.user, request.host))
            exists = cur.fetchone()[0] > 0
            if not exists:
                cur.execute(f"CREATE USER {account} IDENTIFIED BY %s", (request.password,))
            done.append(f"user {request.user}@{request.host}: " + ("kept" if exists else "created"))
            cur.execute(f"GRANT ALL PRIVILEGES ON `{request.database}`.* TO {account}")
    except pymysql.MySQLError as exc:
        raise MariaDBError(f"MariaDB: could not create the database or the user: "
                           f"{exc.args[-1]}") from None
    finally:
        conn.close()
    return done
