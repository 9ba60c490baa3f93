"""The run directory lock: one process writes a run directory at a time.

`RunLock(run_dir).acquire()` takes `run_dir/LOCK` or raises ValueError with one line naming the holder (pid, host,
since when), so a second `closedloop run` on a directory in use exits with status 2 and writes nothing; the CLI
asks `probe(run_dir)` before its slow preparation (corpus, tokenizer), so that refusal comes within seconds.
How a holder is known to be alive:
- the process holds an exclusive `flock` on LOCK for as long as it runs; the kernel drops it when the process dies,
  however it dies (kill -9 included), so on one host a LOCK whose flock can be taken belongs to a dead process;
- LOCK's content names the holder (pid, host, start) and a heartbeat thread rewrites it every HEARTBEAT_S seconds.
  On a shared filesystem whose flock does not reach across nodes, a LOCK that names another host is honoured while
  its heartbeat is younger than STALE_S seconds (`CLOSEDLOOP_LOCK_STALE_S`), and taken over after (node lost).
A lock left by a dead holder is taken over with a line saying so (`acquire` returns it). `release()` empties the
file and drops the flock; the file itself stays (deleting it would let two processes lock two different files).
Under torchrun only rank 0 holds the lock (`acquire_lock`). Tested in tests/test_lock.py.
"""
from __future__ import annotations

import fcntl
import json
import os
import platform
import threading
import time

NAME = "LOCK"
HEARTBEAT_S = 15.0
STALE_S = float(os.environ.get("CLOSEDLOOP_LOCK_STALE_S", "120"))


class RunLock:
    def __init__(self, run_dir: str):
        self.run_dir, self.path = run_dir, os.path.join(run_dir, NAME)
        self.fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.info = {"pid": os.getpid(), "host": platform.node(), "started": time.time()}

    def acquire(self) -> str | None:
        """Take the lock (creating run_dir if needed). Returns a line when a stale lock was taken over, else None;
        raises ValueError naming the holder when the directory is in use."""
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            note = _take(fd, self.run_dir, self.path)
        except ValueError:
            os.close(fd)
            raise
        self.fd = fd
        self._write()
        self._beat = threading.Thread(target=self._heartbeat, name="closedloop-lock", daemon=True)
        self._beat.start()
        return note

    def _write(self) -> None:
        data = json.dumps({**self.info, "heartbeat": time.time()}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write()
            except OSError:
                return

    def release(self) -> None:
        if self.fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            os.ftruncate(self.fd, 0)  # empty = free: the next holder has nobody to take over from
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _take(fd: int, run_dir: str, path: str) -> str | None:
    """flock fd and judge the holder named in the file: a note when taking over a dead one; ValueError (flock
    dropped) when the directory is in use."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ValueError(f"{run_dir} is in use by {_describe(_read(path))}; wait for it to finish or stop it "
                         "(its lock is taken over once it has died)") from None
    holder = _read(path)
    if not holder:
        return None
    age = time.time() - holder.get("heartbeat", 0)
    if holder.get("host") != platform.node() and age < STALE_S:
        # Another node, heartbeat fresh: its flock may not reach us (a shared filesystem); honour the file.
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise ValueError(f"{run_dir} is in use by {_describe(holder)} (heartbeat {age:.0f} s ago)")
    why = "is no longer running" if holder.get("host") == platform.node() else f"sent no heartbeat for {age:.0f} s"
    return f"{run_dir}: taking over the lock of {_describe(holder)}, which {why}"


def probe(run_dir: str) -> None:
    """Raise the in-use ValueError at once if run_dir's lock is held (the CLI asks before its slow preparation);
    takes nothing. Under torchrun only rank 0 asks (the RANK variable, as torch is not imported yet): another rank
    could find the lock rank 0 has just taken for this very run; `acquire_lock` gives every rank rank 0's answer."""
    if os.environ.get("RANK", "0") != "0":
        return
    path = os.path.join(run_dir, NAME)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return  # no lock file (or not a directory): nobody holds it
    try:
        _take(fd, run_dir, path)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def acquire_lock(run_dir: str, say) -> RunLock | None:
    """Rank 0 takes run_dir's lock (`say(line)` when it takes over a stale one); every rank raises the same
    one-line ValueError when the directory is in use. Returns the lock on rank 0, None on the others."""
    from training import distributed  # lazy: `probe` runs before torch is imported

    lock, err = None, None
    if distributed.is_main():
        lock = RunLock(run_dir)
        try:
            note = lock.acquire()
            if note:
                say(note)
        except ValueError as e:
            lock, err = None, str(e)
    if distributed.world_size() > 1:
        err = distributed.gather_objects(err)[0]  # rank 0's verdict, on every rank
    if err:
        raise ValueError(err)
    return lock


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (it has not written its pid yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {since})"
