"""The DICOM daemon's receiving processes (dicom/receivers.py, dicom/receiver.py):
connections accepted by the daemon, served by it or handed to another process,
counted once against max_associations and the per-address cap, its log lines in
the daemon's log, a dead one replaced, none left behind."""
from __future__ import annotations

import json
import os
import signal
import socket

import pytest

from dsmpacs.dicom import handover
from dsmpacs.dicom.receivers import shares
from dsmpacs.settings import Settings, SettingsError
from tests import factories as f
from tests.hostile import A_ABORT, associate, with_children
from tests.peers import wait_until
from tests.processes import gone, held_association, listens, parent_of, receiver_pid, served_where

A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x02, 0x03


def test_max_associations_is_split_into_shares_that_add_up():
    assert shares(16, 2) == [8, 8]
    assert shares(5, 2) == [3, 2]
    assert shares(3, 4) == [1, 1, 1]        # never a process with no association at all
    assert shares(1, 2) == [1]
    for total in range(1, 40):
        for processes in range(1, 6):
            split = shares(total, processes)
            assert sum(split) == total and min(split) >= 1 and len(split) == min(total, processes)


def test_settings_reach_a_receiving_process_unchanged(tmp_path):
    settings = Settings.load(data_dir=tmp_path, env={}, overrides={
        "storage_root": str(tmp_path / "images"), "dicom_port": "0", "max_associations": "5",
        "unknown_ae_may_store": "true", "index_timeout": "7.5"})
    sent = json.loads(handover.encode({"settings": settings.as_values()}))["settings"]
    assert Settings.from_values(sent) == settings
    with pytest.raises(SettingsError, match="unknown settings: nonsense"):
        Settings.from_values({**sent, "nonsense": 1})


def test_the_channel_carries_a_connection_and_refuses_what_it_does_not_carry():
    ours, theirs = handover.pair()
    left, right = socket.socketpair()
    try:
        handover.send(ours, {"connection": 1, "address": ["127.0.0.1", 4242]}, left.fileno())
        message, fd = handover.receive(theirs)
        assert message == {"connection": 1, "address": ["127.0.0.1", 4242]}
        with socket.socket(fileno=fd) as handed:
            handed.sendall(b"over the handed descriptor")
            assert right.recv(100) == b"over the handed descriptor"
        ours.send(b"not json")
        with pytest.raises(handover.ChannelError, match="unreadable"):
            handover.receive(theirs)
        with pytest.raises(handover.ChannelError, match="over the channel"):
            handover.send(ours, {"log": "x" * handover.MAX_MESSAGE})
        ours.close()
        assert handover.receive(theirs) is None
    finally:
        for sock in (theirs, left, right):
            sock.close()


def test_connections_go_to_both_processes_and_every_instance_is_kept(server_factory, tmp_path):
    srv = server_factory(only="dicom")
    receiver = receiver_pid(srv)
    daemon = srv.child_pid("dicom")
    assert parent_of(receiver) == daemon
    # Only the daemon listens: the receiving process has no port of its own.
    assert srv.port in listens(daemon)
    assert listens(receiver) == []
    held = [held_association(srv.port) for _ in range(4)]
    try:
        # The most room first, a receiving process on a tie: receiver, daemon, receiver, daemon.
        where = [served_where(srv, receiver, port) for _, port in held]
        assert where == ["receiver", "daemon", "receiver", "daemon"]
        sent = []
        for i, (assoc, _) in enumerate(held):
            ds = f.secondary_capture(size=16, instance_number=i + 1)
            path = f.write(ds, tmp_path / f"sc{i}.dcm")
            sent.append((ds.SOPInstanceUID, f.dataset_bytes(path)))
            assert assoc.send_c_store(path).Status == 0x0000
    finally:
        for assoc, _ in held:
            assoc.release()
    stored = {f.read_uid(p): f.dataset_bytes(p) for p in srv.storage.glob("[0-9]*/*/*/*.dcm")}
    assert stored == dict(sent), "an instance stored by either process is missing or altered"
    # One log file, one writer: what the receiving process logged is in the daemon's.
    log_file = (srv.data_dir / "logs" / "dsmpacs.log").read_text()
    for (_, port), process in zip(held, where):
        label = "dicom-2" if process == "receiver" else "dicom"
        assert f" {label} dsmpacs.dicom.associations: association from HOLDER (127.0.0.1:{port})" \
            in log_file
    assert f"DICOM receiving process 2 up (pid {receiver})" in log_file


def test_max_associations_counts_the_associations_of_every_process(server_factory):
    srv = server_factory(only="dicom", max_associations=3)      # shares: daemon 2, receiver 1
    receiver = receiver_pid(srv)
    held = [held_association(srv.port) for _ in range(3)]
    try:
        assert sorted(served_where(srv, receiver, port) for _, port in held) == \
            ["daemon", "daemon", "receiver"]
        sock, answer = associate(srv.port)
        sock.close()
        # A-ASSOCIATE-RJ: rejected-transient, service provider (presentation), local limit exceeded.
        assert answer is not None and answer[0] == A_ASSOCIATE_RJ, answer
        assert answer[1][1:4] == bytes([2, 3, 2]), answer[1][:4].hex()
        assoc, _ = held.pop(0)
        assoc.release()
        again = wait_until(lambda: _accepted(srv.port), timeout=10, what="the slot given back")
        again.close()
    finally:
        for assoc, _ in held:
            assoc.release()


def _accepted(port: int):
    sock, answer = associate(port)
    if answer is not None and answer[0] == A_ASSOCIATE_AC:
        return sock
    sock.close()
    return None


def test_the_per_address_cap_is_one_count_over_every_process(server_factory):
    srv = server_factory(only="dicom", max_associations_per_address=2)
    receiver = receiver_pid(srv)
    first, second = (held_association(srv.port) for _ in range(2))
    try:
        assert {served_where(srv, receiver, first[1]), served_where(srv, receiver, second[1])} == \
            {"daemon", "receiver"}
        sock, answer = associate(srv.port)
        sock.close()
        assert answer is None, "a third connection from one address was served"
        assert "refusing a connection from 127.0.0.1" in srv.log()
        # The receiving process says when its connection ends; the slot is free again.
        in_receiver = first if served_where(srv, receiver, first[1]) == "receiver" else second
        in_receiver[0].abort()
        wait_until(lambda: _accepted(srv.port), timeout=10, what="the receiver's slot given back").close()
    finally:
        for assoc, _ in (first, second):
            if assoc.is_established:
                assoc.release()


def test_a_receiving_process_that_dies_is_replaced_and_its_slots_given_back(server_factory):
    srv = server_factory(only="dicom", max_associations_per_address=2)
    receiver = receiver_pid(srv)
    assoc, port = held_association(srv.port)
    assert served_where(srv, receiver, port) == "receiver"
    os.kill(receiver, signal.SIGKILL)
    wait_until(lambda: f"DICOM receiving process 2 (pid {receiver}) ended (SIGKILL)" in srv.log(),
               timeout=10, what="the end logged")
    assert "1 association(s) it served are lost" in srv.log()
    replacement = receiver_pid(srv, after=1)
    assert replacement != receiver and parent_of(replacement) == srv.child_pid("dicom")
    # Both slots of this address are free: the dead process's connection was released.
    two = [wait_until(lambda: _accepted(srv.port), timeout=10, what="a slot") for _ in range(2)]
    for sock in two:
        sock.sendall(A_ABORT)
        sock.close()
    assert srv.echoscu().returncode == 0


def test_stopping_the_daemon_stops_its_receiving_process(server_factory):
    srv = server_factory(only="dicom")
    receiver = receiver_pid(srv)
    srv.stop()
    wait_until(lambda: gone(receiver), timeout=15, what="the receiving process gone")


def test_a_receiving_process_ends_when_its_daemon_is_killed(server_factory):
    """However the daemon dies, the kernel closes its end of the channel."""
    srv = server_factory(only="dicom")
    receiver = receiver_pid(srv)
    os.kill(srv.child_pid("dicom"), signal.SIGKILL)
    wait_until(lambda: gone(receiver), timeout=15, what="the receiving process gone")


def test_one_process_when_asked(server_factory):
    srv = server_factory(only="dicom", dicom_processes=1)
    assert srv.echoscu().returncode == 0
    daemon = srv.child_pid("dicom")
    assert with_children(daemon) == [daemon] and "receiving process" not in srv.log()
