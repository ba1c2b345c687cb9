"""A SIGKILLed job leaves no decoder processes behind (a real process tree, not a mock)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipelines.decode_pool import DecodePool

REPO = Path(__file__).resolve().parents[2]

# The "job": a DecodePool with images in flight (each decoder sleeping in its task).
# It prints the decoders' pids once both are busy, then waits to be killed.
JOB = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    from pipelines.decode_pool import DecodePool


    def slow_decode(ready_dir):
        Path(ready_dir, str(os.getpid())).touch()
        time.sleep(600)


    if __name__ == "__main__":
        ready = sys.argv[1]
        pool = DecodePool(slow_decode, processes=2, window=8, timeout=600)
        for key in range(4):
            list(pool.submit(key, ready))
        while len(os.listdir(ready)) < 2:
            time.sleep(0.05)
        print(" ".join(os.listdir(ready)), flush=True)
        time.sleep(600)
    """
)


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name, or None for no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()  # [state, ppid, ...]


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited; only unreaped


def _read_line(process: subprocess.Popen, timeout: float, stderr: Path) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"the job printed no decoder pids within {timeout:g} s:\n{stderr.read_text()}"
    return process.stdout.readline()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_decoders_exit_when_the_job_is_sigkilled(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    # The job's stderr (and its resource tracker's complaint about the semaphores a
    # SIGKILL leaks) goes to a file, shown if the job fails to start.
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as stderr_file:
        job = subprocess.Popen(
            [sys.executable, str(script), str(ready)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        )
    decoders: list[int] = []
    try:
        decoders = [int(pid) for pid in _read_line(job, 120, stderr).split()]
        assert len(decoders) == 2
        assert all(_stat(pid)[1] == str(job.pid) for pid in decoders), "not the job's children"

        job.send_signal(signal.SIGKILL)
        job.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in decoders) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in decoders if _alive(pid)], "decoders outlived their job"
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        for pid in decoders:  # orphans of a failed run: ours to clean up
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _decoder_pid(_payload: object) -> int:
    return os.getpid()


def test_decoders_outlive_the_thread_that_started_them():
    """PR_SET_PDEATHSIG follows the parent *thread*; Beam retires idle bundle threads,
    and that must not kill the pool they happened to start."""
    pool = DecodePool(_decoder_pid, processes=1, window=4, timeout=60)
    try:
        first: list = []
        thread = threading.Thread(
            target=lambda: first.extend([*pool.submit("a", None), *pool.drain()])
        )
        thread.start()
        thread.join()
        time.sleep(1)  # a killed decoder would be noticed by now
        second = [*pool.submit("b", None), *pool.drain()]
        assert [error for _, _, error in first + second] == [None, None]
        assert second[0][1] == first[0][1], "the pool was rebuilt: its decoder died"
    finally:
        pool.close()
