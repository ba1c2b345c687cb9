"""A guarded pool of decoder processes that keeps images in flight.

Decoding untrusted files is where a batch job meets corrupt, hostile and enormous
inputs. Each image is decoded in a worker process of a pool, so that:

- a decoder that *crashes* (segfault, OOM kill) takes down only a pool process: the
  pool is rebuilt, the images that were in flight are retried one at a time, and the
  one that crashes again becomes an error row (``DecoderCrashed``);
- a decoder that *hangs* is killed once it has spent ``timeout`` seconds on one image
  (``DecodeTimeout``), counted from when the decoder started that image, not from when
  it was queued, nor while the decoder process itself was still starting (``_decode``);
- decoding *overlaps* with inference: up to ``window`` images are submitted ahead, so
  while the main thread runs the model on one batch the pool decodes the next;
- decoders *die with the job*: a SIGKILLed Beam worker or ``captioning caption`` leaves
  no orphaned decoders behind (``_die_with_parent``);
- pixels come back through *shared memory*, not the result pipe (``_to_shared``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import dataclasses
import itertools
import multiprocessing.context
import multiprocessing.queues
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np


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
    """Run in each decoder at start: exit as soon as ``parent_pid`` dies."""
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


# === The timeout counts from when a decoder starts an image ===
# Up to ``window`` images wait in the pool's queue, so the time since submit() says
# nothing about how long an image has been decoding: with 128 in flight on 2 decoders a
# legal 0.5 s image waits ~30 s for its turn. So each decoder stamps (attempt, time) on a
# queue the parent reads, just before it runs the decode function.
#
# Both sides read time.monotonic(): CLOCK_MONOTONIC on Linux (mach time on macOS,
# QueryPerformanceCounter on Windows) is one clock for the whole machine, so a decoder's
# stamp compares with the parent's own readings, and unlike time.time() it never jumps.

#
# Starting a decoder is not decoding either. A spawned process imports Python, NumPy and
# the decode function's module (Pillow and its plugins) before it can take an image, and
# on a busy worker (TensorFlow loading on the other core, say) that alone has taken
# longer than a short timeout. So the function travels with the initializer, which
# imports it and then stamps READY; until a decoder is ready the oldest image is allowed
# ``max(timeout, STARTUP_SECONDS)``.

_START_POLL_SECONDS = 0.05  # how often the parent looks for the oldest image's stamp
STARTUP_SECONDS = 120.0  # a decoder not ready after this is broken, not slow
_READY = -1  # the "attempt" of a decoder's ready stamp; real attempts count from 0
_stamps: multiprocessing.queues.SimpleQueue | None = None  # in a decoder: its pool's


def _init_decoder(
    parent_pid: int,
    stamps: multiprocessing.queues.SimpleQueue,
    function: Callable[[Any], Any],
) -> None:
    """Pool initializer, run in each decoder; ``function`` is passed only to import it."""
    global _stamps
    _stamps = stamps
    _die_with_parent(parent_pid)
    del function  # unpickling it, before this ran, imported its module
    stamps.put((_READY, time.monotonic()))


def _decode(function: Callable[[Any], Any], attempt: int, payload: Any) -> Any:
    # Stamped after the payload has been received and unpickled (and the function's
    # module imported): only the decoding itself counts against the timeout.
    _stamps.put((attempt, time.monotonic()))
    return _to_shared(function(payload))


# === Pixels come back through shared memory ===
# A result's ``pixels`` (262 KB for a 299 px image) would otherwise be pickled into the
# result pipe and unpickled by the pool's one result thread in the parent, which holds
# the GIL the parent's own work needs: measured on 2 busy cores, returning the pixels
# that way cost a quarter of the pool's rate. A segment per image costs a few system
# calls and one copy on each side.

_SHARE_FROM_BYTES = 16 * 1024  # below this the pipe is cheaper than the system calls


@dataclass(frozen=True)
class _SharedPixels:
    name: str
    shape: tuple[int, ...]
    dtype: str


def _to_shared(result: Any) -> Any:
    """In a decoder: the result with its pixels moved to a shared-memory segment."""
    pixels = getattr(result, "pixels", None)
    if not dataclasses.is_dataclass(result) or not isinstance(pixels, np.ndarray):
        return result
    if pixels.nbytes < _SHARE_FROM_BYTES:
        return result
    segment = shared_memory.SharedMemory(create=True, size=pixels.nbytes)
    try:
        np.ndarray(pixels.shape, pixels.dtype, buffer=segment.buf)[...] = pixels
    finally:
        segment.close()
    handle = _SharedPixels(segment.name, pixels.shape, pixels.dtype.str)
    return dataclasses.replace(result, pixels=handle)


def _from_shared(result: Any) -> Any:
    """In the parent: the pixels copied out of their segment, which is then removed."""
    handle = getattr(result, "pixels", None)
    if not isinstance(handle, _SharedPixels):
        return result
    segment = shared_memory.SharedMemory(name=handle.name)
    try:
        view = np.ndarray(handle.shape, np.dtype(handle.dtype), buffer=segment.buf)
        pixels = view.copy()
        del view  # the segment cannot close while a view of it exists
    finally:
        segment.close()
        segment.unlink()
    return dataclasses.replace(result, pixels=pixels)


@dataclass
class _InFlight:
    key: Any
    payload: Any
    future: concurrent.futures.Future
    attempt: int  # unique per submission, so a retried image is never confused with itself


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
        self._attempts = itertools.count()
        # The current pool's stamps, and the start times read from them, by attempt.
        self._stamps: multiprocessing.queues.SimpleQueue | None = None
        self._started: dict[int, float] = {}
        self._ready_at: float | None = None  # when the latest decoder became ready

    # === Pool lifecycle ===
    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            context = _SpawnContext()
            # A queue per pool: a decoder killed halfway through a put() leaves the
            # queue's lock held, and that pool's stamps mean nothing to the next one.
            self._stamps = context.SimpleQueue()
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.processes,
                mp_context=context,
                initializer=_init_decoder,
                initargs=(os.getpid(), self._stamps, self.function),
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
        if self._stamps is not None:
            self._stamps.close()
        self._stamps = None
        self._started.clear()
        self._ready_at = None

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
        attempt = next(self._attempts)
        future = self._executor().submit(_decode, self.function, attempt, payload)
        return _InFlight(key, payload, future, attempt)

    def _read_stamps(self) -> None:
        # Never blocks: there is at most one stamp per image in flight (~30 bytes each),
        # far below what a pipe holds, so a decoder's put() never waits for the parent
        # either. A stamp is a single write that small, which a pipe takes whole: a
        # decoder dying mid-put cannot leave half a stamp for get() to wait on.
        while self._stamps is not None and not self._stamps.empty():
            attempt, stamped = self._stamps.get()
            if attempt == _READY:
                self._ready_at = max(self._ready_at or stamped, stamped)
            else:
                self._started[attempt] = stamped

    def _wait(self, item: _InFlight) -> bool:
        """Wait for ``item``, which must be the oldest in flight; False if it ran out of time.

        An image's deadline is ``timeout`` after a decoder started it. One not started
        yet has none, with one exception: decoders take work in order and everything
        queued before ``item`` has finished, so a free decoder takes it at once. If none
        has ``timeout`` after a decoder was ready (or ``STARTUP_SECONDS`` after we began
        waiting, while none is), the decoders are stuck and only a new pool helps.
        """
        waiting_since = time.monotonic()
        while True:
            done = item.future.done()
            # Read after done(): a decoder stamps before it runs, so by now any stamp of
            # a finished image is in the queue, and popping it here leaks nothing.
            self._read_stamps()
            if done:
                self._started.pop(item.attempt, None)
                return True
            started = self._started.get(item.attempt)
            if started is not None:
                deadline = started + self.timeout
            elif self._ready_at is not None:
                deadline = max(waiting_since, self._ready_at) + self.timeout
            else:
                deadline = waiting_since + max(self.timeout, STARTUP_SECONDS)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if started is None:
                remaining = min(remaining, _START_POLL_SECONDS)  # look for its stamp again
            concurrent.futures.wait([item.future], timeout=remaining)

    def _timed_out(self) -> DecodeTimeoutError:
        return DecodeTimeoutError(
            f"decoding took longer than {self.timeout:g} s; the decoder was killed"
        )

    def _finish_oldest(self) -> Iterator[tuple[Any, Any, BaseException | None]]:
        item = self._pending.popleft()
        if not self._wait(item):
            yield item.key, None, self._timed_out()
            self._restart_pending()
            return
        try:
            result = item.future.result()
        except BrokenProcessPool:
            yield from self._isolate_crash(item)
        except Exception as error:  # noqa: BLE001 - the decoder's own error, reported per image
            yield item.key, None, error
        else:
            yield item.key, _from_shared(result), None

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
            retry = self._start(item.key, item.payload)
            if not self._wait(retry):
                self._kill()
                yield item.key, None, self._timed_out()
                continue
            try:
                result = retry.future.result()
            except BrokenProcessPool:
                self._kill()
                yield (
                    item.key,
                    None,
                    DecoderCrashedError("the decoder process died while decoding this image"),
                )
            except Exception as error:  # noqa: BLE001 - the decoder's own error, per image
                yield item.key, None, error
            else:
                yield item.key, _from_shared(result), None
