"""The socket guard of conftest.py really blocks the network (otherwise 'no download' tests prove
nothing)."""

from __future__ import annotations

import socket

import pytest

REFUSED = "network access attempted"


def test_connections_are_refused() -> None:
    with pytest.raises(RuntimeError, match=REFUSED):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    with pytest.raises(RuntimeError, match=REFUSED):
        socket.getaddrinfo("github.com", 443)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as raw:
        with pytest.raises(RuntimeError, match=REFUSED):
            raw.connect(("127.0.0.1", 9))
