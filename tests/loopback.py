"""Shared by the tests that listen on loopback: a port free to bind (the distributed rendezvous, the servers)."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
