#!/bin/sh
# Entry point of tests/dsm/Dockerfile: a MariaDB like the CI machine's (root, empty
# password, TCP on 127.0.0.1:3306), then the DSM package tests. Arguments go to pytest.
set -eu
service mariadb start >/dev/null
# Debian's root logs in through the unix socket only; the tests connect over TCP.
mariadb -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;"
exec .venv/bin/python -m pytest tests/dsm -ra "$@"
