"""The console script's quick exit still does what a normal exit owes: threads, exit handlers, stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from ragindex.quick_exit import quick_exit

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))

def late():
    time.sleep(0.3)
    (out / "thread").write_text("joined")

threading.Thread(target=late).start()  # a non-daemon thread still running at exit
pool = ThreadPoolExecutor(2)  # never shut down: only threading's exit hook wakes its workers
pool.submit(lambda: (out / "pool").write_text("done"))
sys.stdout.write("no newline, still buffered")
quick_exit(int(sys.argv[2]))
"""


def run_script(tmp_path: Path, code: int, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as in a pipe
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(code)], timeout=60, env=env, **kwargs)


def test_the_quick_exit_joins_threads_runs_exit_handlers_and_flushes_stdout(tmp_path: Path) -> None:
    proc = run_script(tmp_path, 3, capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "no newline, still buffered"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "pool").read_text() == "done"


def test_a_stdout_that_cannot_be_written_fails_the_exit_as_cpython_does(tmp_path: Path) -> None:
    reader, writer = os.pipe()
    os.close(reader)  # nobody reads: the flush at exit gets a broken pipe
    try:
        proc = run_script(tmp_path, 0, stdout=writer, stderr=subprocess.PIPE)
    finally:
        os.close(writer)
    assert proc.returncode == 120
    assert (tmp_path / "atexit").read_text() == "ran"
