"""Multi-worker training for real: two ``captioning train`` processes on loopback ports,
each told its place in the cluster by TF_CONFIG, under MultiWorkerMirroredStrategy.

The model is the tiny preset: the point here is the distribution (synchronised weights,
batch normalisation included; the chief-only bundle; resuming after a lost worker), not
the model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captioning.errors import EXIT_RESTART

pytestmark = pytest.mark.timeout(900)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class Cluster:
    """Two workers (worker 0 is the chief, as on Vertex AI without a chief pool)."""

    def __init__(self, scenes: Path, root: Path) -> None:
        self.scenes, self.root = scenes, root
        self.out = root / "bundle"
        self.ports = _free_ports(2)
        self.processes: list[subprocess.Popen] = []

    def start(self, epochs: int, backbone: str = "--no-trainable-backbone") -> None:
        self.ports = _free_ports(2)
        self.processes = [self._start(index, epochs, backbone) for index in range(2)]

    def _start(self, index: int, epochs: int, backbone: str) -> subprocess.Popen:
        tf_config = {
            "cluster": {"worker": [f"localhost:{port}" for port in self.ports]},
            "task": {"type": "worker", "index": index},
        }
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)}
        command = [
            *(sys.executable, "-m", "captioning.cli.main", "train"),
            *("--captions", str(self.scenes / "captions.csv")),
            *("--images", str(self.scenes / "images"), "--out", str(self.out)),
            *("--preset", "tiny", backbone, "--precision", "float32"),
            *("--epochs", str(epochs), "--batch-size", "4"),
        ]
        log = open(self.root / f"worker-{index}.log", "a")  # noqa: SIM115 - the process owns it
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True)

    def wait(self, timeout: float = 600) -> list[dict]:
        results = []
        for index, process in enumerate(self.processes):
            stdout, _ = process.communicate(timeout=timeout)
            log = (self.root / f"worker-{index}.log").read_text()[-3000:]
            assert process.returncode == 0, log
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        return results

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def cluster(scenes, tmp_path):
    cluster = Cluster(scenes, tmp_path)
    yield cluster
    cluster.kill_all()


def _bundles_under(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.rglob("manifest.json"))


def test_two_workers_end_identical_and_only_the_chief_writes_the_bundle(cluster, tmp_path):
    from captioning.bundle import load_bundle
    from captioning.training.trainer import weights_fingerprint

    # The backbone trains too: its batch-norm statistics must stay in step across workers.
    cluster.start(epochs=2, backbone="--trainable-backbone")
    chief, worker = cluster.wait()

    assert (chief["chief"], worker["chief"]) == (True, False)
    assert chief["epochs_run"] == worker["epochs_run"] == 2
    # Gradients were all-reduced every step and batch norm used the global batch's
    # statistics: both workers hold the same model.
    assert chief["weights_fingerprint"] == worker["weights_fingerprint"]
    # Only the chief wrote a bundle, and it holds exactly those weights.
    assert chief["bundle"] == str(cluster.out) and worker["bundle"] is None
    assert _bundles_under(tmp_path) == [cluster.out]
    loaded = load_bundle(str(cluster.out), precision="float32")
    assert weights_fingerprint(loaded.captioner) == chief["weights_fingerprint"]
    # The shared run directory holds one writer's files, not one set per worker.
    run = Path(f"{cluster.out}.run")
    assert len(list((run / "tensorboard").rglob("events.out.tfevents*"))) >= 1
    assert not [path for path in run.rglob("*") if "worker-" in path.name]
    assert (
        "MultiWorkerMirroredStrategy: 2 replica(s), worker-1"
        in (tmp_path / "worker-1.log").read_text()
    )


def test_a_killed_worker_is_survived_by_resuming_from_the_checkpoint(cluster):
    metadata = Path(f"{cluster.out}.run") / "checkpoint" / "training_metadata.json"
    cluster.start(epochs=40)
    deadline = time.monotonic() + 400
    while not metadata.exists():
        assert time.monotonic() < deadline, "no checkpoint was written"
        assert all(p.poll() is None for p in cluster.processes), "a worker exited early"
        time.sleep(0.1)
    chief, worker = cluster.processes
    worker.send_signal(signal.SIGKILL)  # preempted: no chance to clean up
    worker.wait()
    # The chief cannot finish a collective without its peer: it stops with a one-line
    # error and the exit status that tells a platform to restart the job.
    chief.wait(timeout=300)
    assert chief.returncode == EXIT_RESTART
    chief_log = (cluster.root / "worker-0.log").read_text()
    assert "restart the job to resume from the checkpoint" in chief_log
    assert "Traceback" not in chief_log
    killed_at = json.loads(metadata.read_text())["epoch"]
    assert 1 <= killed_at < 40

    cluster.start(epochs=killed_at + 2)
    chief_result, worker_result = cluster.wait()
    for result in (chief_result, worker_result):
        assert result["resumed_from"]["epoch"] >= killed_at
        # Only the epochs after the checkpoint ran again.
        assert result["epochs_run"] == killed_at + 2 - result["resumed_from"]["epoch"]
    assert chief_result["weights_fingerprint"] == worker_result["weights_fingerprint"]
    assert (cluster.out / "manifest.json").exists()
