"""A guarded pool of decoder processes that keeps images in flight.

Decoding untrusted files is where a batch job meets corrupt, hostile and enormous
inputs. Each image is decoded in a worker process of a small pool, so that:

- a decoder that *crashes* (segfault, OOM kill) takes down only a pool process: the
  pool is rebuilt, the images that were in flight are retried one at a time, and the
  one that crashes again becomes an error row (``DecoderCrashed``);
- a decoder that *hangs* is killed after ``timeout`` seconds (``DecodeTimeout``);
- decoding *overlaps* with inference: up to ``window`` images are submitted ahead, so
  while the main thread runs the model on one batch the pool decodes the next;
- decoders *die with the job*: a SIGKILLed Beam worker or ``captioning caption`` leaves
  no orphaned decoders behind (``_die_with_parent``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import multiprocessing.context
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any


class DecodeTimeoutError(Exception):
    error_type = "DecodeTimeout"


class DecoderCrashedError(Exception):
    error_type = "DecoderCrashed"


# === Decoders die with the process that started them ===
# A spawned decoder is handed both ends of its work queue's pipe, so it never sees EOF
# when its parent is SIGKILLed: without help it would wait for work forever.

_WATCHDOG_INTERVAL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Pool initializer, run in each decoder: exit as soon as ``parent_pid`` dies."""
    if sys.platform.startswith("linux"):
        # The kernel's own signal works even while a hung decoder holds the GIL in C,
        # where the watchdog thread below could never run.
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no usable libc (e.g. a static or unusual build): the watchdog remains
    # The parent may have died before this ran (the signal is only sent for deaths
    # after prctl), in which case we already belong to init or a subreaper.
    if os.getppid() != parent_pid:
        os._exit(1)
    # Everywhere (and on non-Linux, alone): a reparented process has a new ppid.
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True
    ).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_WATCHDOG_INTERVAL_SECONDS)
    os._exit(1)  # not sys.exit: the main thread may be stuck in a decoder


# PR_SET_PDEATHSIG fires when the parent *thread* exits, not the parent process. Pool
# processes are spawned lazily by whichever thread calls submit(), and a Beam worker
# retires idle bundle threads, which would kill healthy decoders. So every decoder is
# started from one thread that lives as long as the process.
_spawner_lock = threading.Lock()
_spawner: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None


def _spawner_thread() -> concurrent.futures.ThreadPoolExecutor:
    global _spawner
    with _spawner_lock:
        # Keyed by pid: a forked copy of this process has the executor but not its thread.
        if _spawner is None or _spawner[0] != os.getpid():
            executor = concurrent.futures.ThreadPoolExecutor(1, "decoder-spawner")
            _spawner = (os.getpid(), executor)
        return _spawner[1]


class _LongLivedParentProcess(multiprocessing.context.SpawnProcess):
    def start(self) -> None:
        _spawner_thread().submit(super().start).result()


class _SpawnContext(multiprocessing.context.SpawnContext):
    # "spawn": a fork of a process running TensorFlow's thread pools can inherit locks
    # held by threads that do not exist in the child.
    Process = _LongLivedParentProcess


@dataclass
class _InFlight:
    key: Any
    payload: Any
    future: concurrent.futures.Future
    started: float


class DecodePool:
    """Submit (key, payload) items; collect (key, result) or (key, exception) in order."""

    def __init__(
        self, function: Callable[[Any], Any], processes: int, window: int, timeout: float
    ) -> None:
        self.function = function
        self.processes = processes
        self.window = window
        self.timeout = timeout
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pending: collections.deque[_InFlight] = collections.deque()

    # === Pool lifecycle ===
    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.processes,
                mp_context=_SpawnContext(),
                initializer=_die_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _kill(self) -> None:
        """Tear the pool down hard: a hung decoder never returns on its own."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(timeout=5)

    def close(self) -> None:
        self._kill()

    # === Work ===
    def submit(self, key: Any, payload: Any) -> Iterator[tuple[Any, Any, BaseException | None]]:
        """Queue one item; yields whatever completed while the window was full."""
        self._pending.append(self._start(key, payload))
        while len(self._pending) > self.window:
            yield from self._finish_oldest()

    def drain(self) -> Iterator[tuple[Any, Any, BaseException | None]]:
        while self._pending:
            yield from self._finish_oldest()

    def _start(self, key: Any, payload: Any) -> _InFlight:
        future = self._executor().submit(self.function, payload)
        return _InFlight(key, payload, future, time.monotonic())

    def _finish_oldest(self) -> Iterator[tuple[Any, Any, BaseException | None]]:
        item = self._pending.popleft()
        remaining = self.timeout - (time.monotonic() - item.started)
        try:
            yield item.key, item.future.result(timeout=max(remaining, 0.0)), None
        except concurrent.futures.TimeoutError:
            yield (
                item.key,
                None,
                DecodeTimeoutError(
                    f"decoding took longer than {self.timeout:g} s; the decoder was killed"
                ),
            )
            self._restart_pending()
        except BrokenProcessPool:
            yield from self._isolate_crash(item)
        except Exception as error:  # noqa: BLE001 - the decoder's own error, reported per image
            yield item.key, None, error

    def _restart_pending(self) -> None:
        """Kill the pool and resubmit everything still in flight to a fresh one."""
        waiting = list(self._pending)
        self._pending.clear()
        self._kill()
        for item in waiting:
            self._pending.append(self._start(item.key, item.payload))

    def _isolate_crash(self, first: _InFlight) -> Iterator[tuple[Any, Any, BaseException | None]]:
        """The pool died under some in-flight item: retry each alone to find which."""
        suspects = [first, *self._pending]
        self._pending.clear()
        self._kill()
        for item in suspects:
            try:
                result = self._start(item.key, item.payload).future.result(timeout=self.timeout)
                yield item.key, result, None
            except BrokenProcessPool:
                self._kill()
                yield (
                    item.key,
                    None,
                    DecoderCrashedError("the decoder process died while decoding this image"),
                )
            except concurrent.futures.TimeoutError:
                self._kill()
                yield (
                    item.key,
                    None,
                    DecodeTimeoutError(
                        f"decoding took longer than {self.timeout:g} s; the decoder was killed"
                    ),
                )
            except Exception as error:  # noqa: BLE001 - the decoder's own error, per image
                yield item.key, None, error
