"""Worker processes held to the download's clocks: the item's time limit, the request timeout, the stop flag.

A thread cannot be ended from outside, and a library that reads its socket in blocks (yt-dlp
asks for 1 KiB and more per read) only reaches its progress hooks when a block is complete: at a
byte every half second, not within any timeout. So such work runs in a worker process, one per
download thread, reused from item to item, and the parent, looking every :data:`TICK` seconds,
kills it when the item's time is up, when the run stops (Ctrl-C), or when it makes no progress:
the bytes it has written for the item (``written()``) must grow by
:data:`~cmgh.data.download.fetch.PROGRESS_BYTES` every ``timeout`` seconds, the request rule of
:mod:`cmgh.data.download.fetch`. A killed worker is replaced at the next item.

Protocol (the worker's side: :mod:`cmgh.data.download.ytdlp_worker`): the worker prints
``ready`` once started (its start-up counts against :data:`STARTUP_SECONDS`, not the request
timeout), then answers each JSON request line on stdin with one JSON line on stdout. It exits when
its stdin closes, or when the ``alive`` pipe whose write end only the parent holds does: a parent
killed with SIGKILL leaves nothing behind writing into the staging folder.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from cmgh.data.download.fetch import ERROR, Deadline, FetchError, Progress

log = logging.getLogger(__name__)
TICK = 0.1
STARTUP_SECONDS = 60.0  # a worker that never says `ready` (a hung import) is a timeout after this
_local = threading.local()
_all: set[Worker] = set()
_all_lock = threading.Lock()


class Worker:
    """One worker process and its pipes; used by one thread at a time."""

    def __init__(self, cmd: Sequence[str]) -> None:
        alive, self._alive = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [*cmd, str(alive)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(alive,), start_new_session=True,
            )
        except OSError:
            os.close(self._alive)
            raise
        finally:
            os.close(alive)
        self.ready = False
        self._out = bytearray()
        self._err = bytearray()
        self.messages: deque[str] = deque(maxlen=20)  # the latest log lines, for an error message
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._selector.register(self.proc.stdout, selectors.EVENT_READ, self._out)
        self._selector.register(self.proc.stderr, selectors.EVENT_READ, self._err)
        with _all_lock:
            _all.add(self)

    def request(self, payload: dict[str, Any], deadline: Deadline, timeout: float, written: Callable[[], int], what: str) -> dict[str, Any]:
        """The worker's answer to ``payload``; FetchError (timeout, or a worker that died) or Interrupted otherwise."""
        assert self.proc.stdin is not None
        self.messages.clear()
        try:
            self.proc.stdin.write(json.dumps(payload).encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died: reading says so
        base = written()  # a resumed part file is not progress of this request
        progress = Progress(timeout, what) if self.ready else Progress(max(timeout, STARTUP_SECONDS), f"{what} (starting the worker)")
        while True:
            line = self._line()
            if line == "ready":
                self.ready, progress = True, Progress(timeout, what)
            elif line is not None:
                try:
                    answer = json.loads(line)
                except json.JSONDecodeError:
                    answer = None
                if not isinstance(answer, dict):
                    raise FetchError(ERROR, f"worker answered {line[:100]!r} for {what}, expected a JSON object")
                return answer
            elif not self._selector.get_map():
                self.proc.wait()
                raise FetchError(ERROR, f"worker process ended with exit code {self.proc.returncode} on {what}: {' | '.join(self.messages)}")
            deadline.check()
            progress.update(written() - base)
            progress.check()

    def _line(self) -> str | None:
        """A whole answer line if one is there after waiting up to TICK; stderr lines go to the log."""
        if b"\n" not in self._out:
            for key, _ in self._selector.select(TICK):
                data = os.read(key.fd, 1 << 16)
                if not data:
                    self._selector.unregister(key.fileobj)
                key.data.extend(data)
            while b"\n" in self._err:
                text, _, rest = bytes(self._err).partition(b"\n")
                self._err[:] = rest
                message = text.decode("utf-8", "replace")
                self.messages.append(message)
                log.debug("worker %d: %s", self.proc.pid, message)
        if b"\n" not in self._out:
            return None
        text, _, rest = bytes(self._out).partition(b"\n")
        self._out[:] = rest
        return text.decode("utf-8", "replace").strip()

    def close(self, kill: bool = False) -> None:
        with _all_lock:
            _all.discard(self)
        if self.proc.poll() is None and kill:
            self.proc.kill()
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the worker's signal to exit
        except OSError:
            pass  # it is gone already
        if self._alive >= 0:
            os.close(self._alive)
            self._alive = -1
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._selector.close()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def request(cmd: Sequence[str], payload: dict[str, Any], *, deadline: Deadline, timeout: float, written: Callable[[], int], what: str) -> dict[str, Any]:
    """``payload`` answered by this thread's worker running ``cmd`` (started when there is none);
    a worker that fails a clock, or the stop flag, is killed and replaced at the next call."""
    workers: dict[tuple[str, ...], Worker] = _local.__dict__.setdefault("workers", {})
    key = tuple(cmd)
    worker = workers.get(key)
    if worker is None or worker.proc.poll() is not None:
        worker = workers[key] = Worker(cmd)
    try:
        return worker.request(payload, deadline, timeout, written, what)
    except BaseException:
        workers.pop(key, None)
        worker.close(kill=True)
        raise


@atexit.register
def close_all() -> None:
    """End every worker (a run's end: their threads are gone, their processes need not wait for it)."""
    with _all_lock:
        workers = list(_all)
    for worker in workers:
        worker.close()
