"""A separate process that drives a registry, for the concurrency and crash tests.

Usage:
    registry_worker.py log URI NAME TAG COUNT          log COUNT distinct contents, print refs and when the
                                                        work began and ended (JSON)
    registry_worker.py alias URI NAME ALIAS COUNT REF...   move ALIAS between REFs COUNT times (JSON: moves,
                                                        began, ended)
    registry_worker.py crash-copy URI NAME              SIGKILL itself after one file was copied
    registry_worker.py crash-commit URI NAME            SIGKILL itself inside the catalogue transaction
    registry_worker.py crash-sync SOURCE TARGET N       sync SOURCE into TARGET, SIGKILL itself while storing
                                                        the N-th record (version or decision) in TARGET
    registry_worker.py crash-sync-inside SOURCE TARGET POINT N
                                                        sync, SIGKILL itself inside the N-th write of TARGET:
                                                        POINT files (a version's first file copied to staging),
                                                        row (its row inserted, not committed) or record (the
                                                        N-th decision's first alias move written, not committed)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from ragindex.registry import RunInfo, open_registry


def make_files(root: Path, tag: str, i: int) -> Path:
    """A directory with content unique to (tag, i) and several files."""
    folder = root / f"{tag}-{i}"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(f"{tag} {i} a\n")
    (folder / "sub" / "b.bin").write_bytes(f"{tag}:{i}".encode() * 1000)
    (folder / "c.json").write_text(json.dumps({"tag": tag, "i": i}))
    return folder


def do_log(uri: str, name: str, tag: str, count: int) -> None:
    """Log ``count`` different contents and print the refs obtained."""
    registry = open_registry(uri)
    refs = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = [make_files(Path(tmp), tag, i) for i in range(count)]
        began = time.time()
        for i, folder in enumerate(folders):
            refs.append(registry.log_artifact(name, "dataset", folder, run=RunInfo("worker", group=tag)).ref)
            if i == 0:
                rendezvous("first")
        ended = time.time()
    print(json.dumps({"refs": refs, "began": began, "ended": ended}))


def do_alias(uri: str, name: str, alias: str, count: int, refs: list[str]) -> None:
    """Move ``alias`` round-robin over ``refs`` ``count`` times."""
    registry = open_registry(uri)
    began = time.time()
    for i in range(count):
        registry.set_alias(refs[i % len(refs)], alias, actor=f"pid{os.getpid()}", reason=f"move {i}")
        if i == 0:
            rendezvous("first")
    print(json.dumps({"moves": count, "began": began, "ended": time.time()}))


def die() -> None:
    """Simulate a hard kill: no cleanup handlers, no finally blocks."""
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def do_crash_copy(uri: str, name: str) -> None:
    """Die after the first file has been copied into the registry's staging area."""
    import ragindex.registry.local as local

    real_copy = local.copy_hashing
    copied = []

    def copy_then_die(src, dst):
        result = real_copy(src, dst)
        copied.append(dst)
        if len(copied) == 1:
            die()
        return result

    local.copy_hashing = copy_then_die
    with tempfile.TemporaryDirectory() as tmp:
        open_registry(uri).log_artifact(name, "dataset", make_files(Path(tmp), "crash", 0), run=RunInfo("crash"))


def do_crash_commit(uri: str, name: str) -> None:
    """Die inside the catalogue transaction, after the version row was inserted but before COMMIT."""
    import ragindex.registry.local as local

    real_move = local.LocalRegistry._move_alias

    def move_then_die(self, conn, *args, **kwargs):
        real_move(self, conn, *args, **kwargs)
        assert conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0] >= 1  # row inserted, uncommitted
        die()

    local.LocalRegistry._move_alias = move_then_die
    with tempfile.TemporaryDirectory() as tmp:
        open_registry(uri).log_artifact(
            name, "dataset", make_files(Path(tmp), "crash", 1), run=RunInfo("crash"), aliases=["prod"]
        )


def do_crash_sync(source: str, target: str, after: int) -> None:
    """Sync, and die (no cleanup) while the target stores its ``after``-th version or decision."""
    import ragindex.registry.local as local
    from ragindex.sync import sync

    calls = {"n": 0}

    def counted(method):
        def wrapped(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == after:
                die()
            return method(self, *args, **kwargs)
        return wrapped

    local.LocalRegistry._log = counted(local.LocalRegistry._log)
    local.LocalRegistry._record = counted(local.LocalRegistry._record)
    sync(open_registry(source, create=False), open_registry(target))
    print(json.dumps({"finished": True}))


def do_crash_sync_inside(source: str, target: str, point: str, nth: int) -> None:
    """Sync, and die (no cleanup) half way through the ``nth`` version (``files``, ``row``) or decision
    (``record``) the target stores."""
    import ragindex.registry.local as local
    from ragindex.sync import sync

    counts = {"log": 0, "record": 0}
    inside = {"now": ""}  # "log" or "record" while the nth of that kind is being written

    def counting(kind: str, method):
        def wrapped(self, *args, **kwargs):
            counts[kind] += 1
            inside["now"] = kind if counts[kind] == nth else ""
            try:
                return method(self, *args, **kwargs)
            finally:
                inside["now"] = ""
        return wrapped

    def die_after(method, when: str, kind: str):
        def wrapped(*args, **kwargs):
            result = method(*args, **kwargs)
            in_transaction = all(getattr(a, "in_transaction", True) for a in args if hasattr(a, "execute"))
            if point == when and inside["now"] == kind and in_transaction:
                die()
            return result
        return wrapped

    local.LocalRegistry._log = counting("log", local.LocalRegistry._log)
    local.LocalRegistry._record = counting("record", local.LocalRegistry._record)
    local.copy_hashing = die_after(local.copy_hashing, "files", "log")
    local.LocalRegistry._row = die_after(local.LocalRegistry._row, "row", "log")  # in _log: right after the INSERT
    local.LocalRegistry._move_alias = die_after(local.LocalRegistry._move_alias, "record", "record")
    sync(open_registry(source, create=False), open_registry(target))
    print(json.dumps({"finished": True}))


def rendezvous(stage: str) -> None:
    """A barrier (``REGISTRY_WORKER_BARRIER=FOLDER:COUNT``): say this worker reached ``stage``, then wait until
    COUNT workers have. At "ready" they start together whatever each took to start up; at "first" (after one
    operation each) none finishes before every other one has begun, however the machine schedules them, and
    workers that run one after the other fail here instead of passing as concurrent."""
    barrier = os.environ.get("REGISTRY_WORKER_BARRIER")
    if not barrier:
        return
    folder, count = barrier.rsplit(":", 1)
    Path(folder, f"{stage}-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while len(list(Path(folder).glob(f"{stage}-*"))) < int(count):
        if time.monotonic() > deadline:
            raise SystemExit(f"barrier {barrier}: the other workers never reached {stage!r}")
        time.sleep(0.002)


def wait_for_start() -> None:
    """Start the work together with the other workers (see ``rendezvous``)."""
    rendezvous("ready")


def main(argv: list[str]) -> None:
    """Dispatch on the command word."""
    command, uri, name, *rest = argv
    open_registry(uri)  # open (and create) before the barrier, as a long-lived worker would
    wait_for_start()
    if command == "log":
        do_log(uri, name, rest[0], int(rest[1]))
    elif command == "alias":
        do_alias(uri, name, rest[0], int(rest[1]), rest[2:])
    elif command == "crash-copy":
        do_crash_copy(uri, name)
    elif command == "crash-commit":
        do_crash_commit(uri, name)
    elif command == "crash-sync":
        do_crash_sync(uri, name, int(rest[0]))
    elif command == "crash-sync-inside":
        do_crash_sync_inside(uri, name, rest[0], int(rest[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
