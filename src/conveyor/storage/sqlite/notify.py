"""Wake idle workers of other processes on this host when new work is stored.

SQLite has no LISTEN/NOTIFY. Each waiting worker binds a Unix datagram socket in
a directory derived from the database's path; a process that stores due work
sends one byte to each socket there. Polling stays as the fallback, so a lost
datagram only delays a job until the next poll.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import tempfile


def wake_dir(db_path: str) -> str:
    digest = hashlib.sha256(os.path.realpath(db_path).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "conveyor-wake", digest)


class Listener:
    def __init__(self, db_path: str) -> None:
        self.dir = wake_dir(db_path)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(self.dir, f"{os.getpid()}-{os.urandom(4).hex()}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    def wait(self, timeout: float) -> bool:
        """Block until poked or ``timeout`` seconds pass; True if poked."""
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while True:
                self.sock.recv(64)
        return True

    def poke(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(b"!", self.path)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class Notifier:
    def __init__(self, db_path: str) -> None:
        self.dir = wake_dir(db_path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def notify(self) -> None:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self.dir, name)
            try:
                self.sock.sendto(b"!", path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # a dead worker's socket
            except OSError:
                pass  # queue full: that worker is awake anyway

    def close(self) -> None:
        self.sock.close()
