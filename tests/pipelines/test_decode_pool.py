"""DecodePool's timeout counts from when a decoder starts an image (real decoder processes).

The pool keeps many images in flight on few decoders, so an image may wait in the queue
far longer than ``timeout`` before a decoder takes it. That wait must not count: only a
decoder that has spent ``timeout`` on one image is hung.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines.decode_pool import DecodePool, DecodeTimeoutError

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 1.5


def _slow_but_legal(payload: int) -> int:
    time.sleep(0.5)
    return payload


def _fast_or_hung(payload: tuple[str, str]) -> str:
    kind, started_file = payload
    if kind == "hang":
        Path(started_file).write_text(repr(time.monotonic()))
        time.sleep(60)
    time.sleep(0.1)
    return kind


def _run(pool: DecodePool, items: list[tuple[str, object]]) -> dict[str, tuple]:
    """key -> (result, error, when it was collected), submitting everything then draining."""
    rows: dict[str, tuple] = {}
    try:
        for key, payload in items:
            for done_key, result, error in pool.submit(key, payload):
                rows[done_key] = (result, error, time.monotonic())
        for done_key, result, error in pool.drain():
            rows[done_key] = (result, error, time.monotonic())
    finally:
        pool.close()
    return rows


def test_images_waiting_for_a_decoder_do_not_time_out():
    # 20 images of 0.5 s on 2 decoders: the last waits ~4.5 s for its turn, three
    # times the timeout, yet each decodes well within it.
    pool = DecodePool(_slow_but_legal, processes=2, window=20, timeout=TIMEOUT)
    rows = _run(pool, [(str(i), i) for i in range(20)])
    timed_out = sorted((key for key, row in rows.items() if row[1] is not None), key=int)
    assert timed_out == [], f"legal images reported as errors: {timed_out}"
    assert {key: row[0] for key, row in rows.items()} == {str(i): i for i in range(20)}


def test_a_decoder_slow_to_start_does_not_time_out_its_first_images(tmp_path, monkeypatch):
    # The decode function's module takes three timeouts to import in each decoder, as
    # Pillow and NumPy can on a busy worker. Starting is not decoding: nothing times out.
    (tmp_path / "slow_to_import.py").write_text(
        textwrap.dedent(f"""
            import multiprocessing, time
            if multiprocessing.parent_process() is not None:  # only in the decoders
                time.sleep({3 * TIMEOUT})
            def decode(payload):
                time.sleep(0.1)
                return payload
            """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned decoders inherit sys.path
    from slow_to_import import decode

    pool = DecodePool(decode, processes=2, window=20, timeout=TIMEOUT)
    try:
        rows = _run(pool, [(str(i), i) for i in range(6)])
    finally:
        sys.modules.pop("slow_to_import", None)
    assert {key: row[1] for key, row in rows.items() if row[1] is not None} == {}
    assert {key: row[0] for key, row in rows.items()} == {str(i): i for i in range(6)}


def test_a_hung_decoder_is_killed_timeout_after_it_started_the_image(tmp_path):
    started_file = tmp_path / "hang_started"
    # Behind nine others, the hung image waits ~0.5 s for a decoder: that must not count.
    keys = [f"fast{i}" for i in range(14)]
    keys.insert(9, "hang")
    items = [(key, ("hang" if key == "hang" else "fast", str(started_file))) for key in keys]
    pool = DecodePool(_fast_or_hung, processes=2, window=20, timeout=TIMEOUT)
    rows = _run(pool, items)

    assert sorted(rows) == sorted(keys)
    _, error, collected = rows.pop("hang")
    assert isinstance(error, DecodeTimeoutError)
    # The decoder stamps its start a moment before the function writes the file.
    hung_for = collected - float(started_file.read_text())
    assert TIMEOUT - 0.25 <= hung_for <= TIMEOUT + 1.0
    assert {key: (row[0], row[1]) for key, row in rows.items()} == {
        key: ("fast", None) for key in rows
    }
