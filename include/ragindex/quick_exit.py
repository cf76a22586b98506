"""Ending the ``ragindex`` process without freeing it, the way mypy's ``util.hard_exit`` does.

A command that imported onnxruntime, FAISS, bm25s and langchain spends ~0.1 s at interpreter exit freeing
every object and module it made (measured 2026-12-03: 125 ms of a 1.3 s two-document update), time a
scheduler waits for and nothing needs: the process's memory goes back to the system anyway. What exit still
owes the world is done first, in CPython's own order: the threading exit hooks and the joins of non-daemon
threads (``threading._shutdown``, what ``Py_FinalizeEx`` calls), then the ``atexit`` handlers (W&B's
run teardown, logging's flush, multiprocessing's children), then the flush of stdout and stderr.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

BROKEN_PIPE_EXIT = 120  # what CPython exits with when flushing stdout fails at exit


def flush_std_streams() -> bool:
    """Flush stdout and stderr; False when one could not be written (a closed pipe, say)."""
    ok = True
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            ok = False
    return ok


def quick_exit(code: int) -> NoReturn:
    """Exit with ``code`` after threads, exit handlers and the std streams, skipping the teardown of objects."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None or threading.current_thread() is not threading.main_thread():
        sys.exit(code)  # not the CPython this was written against, or not the main thread: exit normally
    shutdown()
    atexit._run_exitfuncs()
    if not flush_std_streams() and code == 0:
        code = BROKEN_PIPE_EXIT
    os._exit(code)
