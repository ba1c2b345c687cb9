"""No credentials and no network, for tests that promise to work without either."""

from __future__ import annotations

import socket
from pathlib import Path


def refuse_network(monkeypatch, tmp_path: Path) -> list:
    """Unset every credential source, and make each connection or DNS lookup fail.
    Returns the list the refused attempts are recorded in (empty = none tried)."""
    attempts: list = []

    def refuse(*args, **_):
        attempts.append(args[1:] or args)
        raise OSError("network is off in this test")

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud-config"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts
