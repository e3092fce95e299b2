"""Locks on what a stage writes: a second process fails at once naming the holder; stale locks of this host break."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from severstal.infra import locks
from severstal.infra.locks import Holder, LockError, acquire, hold, process_start, read_holder, release


def write_lock(path, **changes):
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": "severstal train --model seg --fold 0",
              "since": "2026-12-01T10:02:00", "started": process_start(os.getpid()), **changes}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder))


def test_a_held_lock_refuses_a_second_holder_and_is_removed_at_the_end(tmp_path):
    directory = tmp_path / "models" / "demo" / ".locks"
    with hold(directory, "seg-fold0", "seg fold 0 of demo") as path:
        holder = read_holder(path)
        assert holder.pid == os.getpid() and holder.host == socket.gethostname()
        with pytest.raises(LockError) as caught:
            acquire(directory, "seg-fold0", "seg fold 0 of demo")
        message = str(caught.value)
        assert message.startswith(f"seg fold 0 of demo is locked by pid {os.getpid()} on {socket.gethostname()} (")
        assert message.endswith(f"wait for it or stop it (kill {os.getpid()})")
        with hold(directory, "seg-fold1", "seg fold 1 of demo"):  # another target: fine
            pass
    assert not directory.exists() and not (tmp_path / "models").exists()  # created for the lock, left empty


def test_a_lock_of_a_dead_process_on_this_host_is_broken(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    path = tmp_path / ".locks" / "thresholds.lock"
    write_lock(path, pid=dead, started=None)
    assert acquire(tmp_path / ".locks", "thresholds", "the thresholds") == path
    assert read_holder(path).pid == os.getpid()
    release(path)
    assert not path.exists()


def test_a_reused_pid_is_not_the_holder(tmp_path):
    path = tmp_path / ".locks" / "x.lock"
    write_lock(path, started=(process_start(os.getpid()) or 0) + 12345)  # our pid, but a process started later
    assert acquire(tmp_path / ".locks", "x", "x") == path
    release(path)


def test_a_lock_of_another_host_is_never_broken(tmp_path):
    path = tmp_path / ".locks" / "submission.lock"
    write_lock(path, pid=1, host="host-a")
    with pytest.raises(LockError) as caught:
        acquire(tmp_path / ".locks", "submission", "the submission")
    message = str(caught.value)
    assert "locked by pid 1 on host-a (severstal train --model seg --fold 0, since 2026-12-01 10:02:00)" in message
    assert "never broken automatically" in message and f"delete {path}" in message
    assert read_holder(path).host == "host-a"  # left as it was


def test_an_unreadable_lock_is_left_and_named(tmp_path):
    path = tmp_path / ".locks" / "y.lock"
    path.parent.mkdir()
    path.write_text("")
    with pytest.raises(LockError, match=f"cannot be read.*delete {path}"):
        acquire(tmp_path / ".locks", "y", "y")


def test_another_process_fails_at_once(tmp_path):
    script = (f"import time\nfrom severstal.infra.locks import hold\n"
              f"with hold({str(tmp_path / '.locks')!r}, 'seg-fold0', 'seg fold 0 of demo'):\n"
              f"    print('held', flush=True)\n    time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(LockError, match=f"locked by pid {holder.pid} on {socket.gethostname()}"):
            acquire(tmp_path / ".locks", "seg-fold0", "seg fold 0 of demo")
        assert time.monotonic() - started < 1.0
    finally:
        holder.kill()
        holder.wait()
    path = acquire(tmp_path / ".locks", "seg-fold0", "seg fold 0 of demo")  # killed: its lock is stale now
    release(path)


def test_holder_fields_are_recorded(tmp_path):
    with hold(tmp_path / ".locks", "z", "z") as path:
        saved = json.loads(path.read_text())
    assert set(saved) == set(Holder.__dataclass_fields__)
    assert locks.is_running(Holder(**saved))
