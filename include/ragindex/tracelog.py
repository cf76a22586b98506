"""Serving's trace log: one JSON line per answer (time, trace id, release and its parts, hit chunk ids and
scores, latency), bounded and rotating, written off the request path.

Built from the standard library's logging machinery rather than by hand: a bounded ``queue.Queue`` behind a
``QueueHandler`` (a request only enqueues; a full queue drops the line and counts it), a ``QueueListener``
thread that writes, and a ``RotatingFileHandler`` (``max_bytes`` per file, ``backups`` old files). A write
that fails (a full disk) is counted as dropped too, never raised into a request. The question is stored as a
sha256 and a length unless text logging is on, and then with PII masked as the review masks it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_BACKUPS = 5
DEFAULT_QUEUE = 10_000


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """Enqueue without waiting; a full queue drops the line (counted)."""

    def __init__(self, q: queue.Queue, log: "TraceLog") -> None:
        super().__init__(q)
        self._log = log

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._log.count_drop()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # the message is already one JSON line


class _CountingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file whose failed writes are counted, not printed per line."""

    def __init__(self, path: Path, max_bytes: int, backups: int, log: "TraceLog") -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self._log = log

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self._log.count_drop()


def question_fields(question: str, *, log_text: bool) -> dict[str, Any]:
    """How a question is kept: its hash and length, plus its PII-masked text when the operator turned that on."""
    fields: dict[str, Any] = {"question_sha256": hashlib.sha256(question.encode("utf-8")).hexdigest(),
                              "question_chars": len(question)}
    if log_text:
        from ragindex.quality import mask_text

        fields["question"] = mask_text(question)
    return fields


@dataclass
class TraceLog:
    """The JSON-lines log of one server (``path`` and its rotated ``path.1`` … ``path.N``)."""

    path: Path
    log_text: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS
    queue_size: int = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped = 0
        self._drops = threading.Lock()
        self._logger = logging.getLogger(f"ragindex.trace.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        self._file = _CountingFileHandler(self.path, self.max_bytes, self.backups, self)
        self._file.setFormatter(logging.Formatter("%(message)s"))
        self._listener = logging.handlers.QueueListener(q, self._file)
        self._logger.addHandler(_DroppingQueueHandler(q, self))
        self._listener.start()

    def count_drop(self) -> None:
        with self._drops:
            self.dropped += 1

    def write(self, entry: dict[str, Any]) -> None:
        """Queue one answer's line (never blocks, never raises)."""
        try:
            self._logger.info(json.dumps(entry, ensure_ascii=False, sort_keys=True))
        except Exception:  # noqa: BLE001 - a log line must never fail a request
            self.count_drop()

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        self._listener.stop()
        self._file.close()


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """Every line of a trace log and its rotated files, oldest file first."""
    path = Path(path)
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit()
                   else 0)
    for file in [*files, path]:
        if not file.is_file():
            continue
        with open(file, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash


def find_trace(path: Path, trace_id: str) -> dict[str, Any] | None:
    """The logged answer with ``trace_id``, or None."""
    return next((e for e in read_entries(path) if e.get("trace_id") == trace_id), None)
