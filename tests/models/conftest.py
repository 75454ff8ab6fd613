"""Shared fixtures for the model tests: every test here runs with the network cut off."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch


class NetworkAccessError(RuntimeError):
    """Raised by the socket guard: a model tried to reach the network."""


def _refuse(*args: object, **kwargs: object) -> None:
    raise NetworkAccessError(f"network access attempted: {args!r}")


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _refuse_network(original):
    """``socket.connect`` that refuses every family but local (AF_UNIX) sockets: the
    multiprocessing machinery of data loaders talks over those, and they reach no network."""

    def connect(sock: socket.socket, *args: object, **kwargs: object):
        if getattr(socket, "AF_UNIX", None) is not None and sock.family == socket.AF_UNIX:
            return original(sock, *args, **kwargs)
        return _refuse(sock, *args)

    return connect


@pytest.fixture(scope="package", autouse=True)
def no_network() -> Iterator[None]:
    """Make every outgoing connection and name lookup fail for the whole package.

    Package scope, so that module-scoped fixtures which load pretrained models are guarded too.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse_network(_connect))
        patch.setattr(socket.socket, "connect_ex", _refuse_network(_connect_ex))
        patch.setattr(socket, "create_connection", _refuse)
        patch.setattr(socket, "getaddrinfo", _refuse)
        yield


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run the model tests on one intra-op thread, restoring the setting afterwards.

    The batches here are tiny, so a second thread gains little; but when other processes share the
    cores, torch's spinning worker threads make a forward pass 50-100x slower (measured: 13 ms vs
    1-3 s for EfficientNet-Lite0 on 2×64×64 with a busy second core).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
