"""Large outputs by reference: a content-addressed directory of JSON files.

A step output (or run output) larger than the threshold is written here, and the row
keeps a small reference in its place: ``{"__conveyor_blob__": "sha256:<hex>"}``. Reads
resolve it transparently. With PostgreSQL and workers on several hosts, the directory
must be shared (a network file system) so that every worker can read what another wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from conveyor.errors import ConfigError, NotFound

MARK = '{"__conveyor_blob__":"'
DEFAULT_THRESHOLD = 256 * 1024


class BlobStore:
    def __init__(self, directory: str | os.PathLike[str], threshold: int = DEFAULT_THRESHOLD) -> None:
        if threshold < 1024:
            raise ConfigError("blob_threshold must be at least 1024 bytes")
        self.dir = Path(directory).resolve()
        self.threshold = threshold

    def offload(self, text: str | None) -> str | None:
        """``text`` itself, or a reference to it once stored, if it is larger than the threshold."""
        if text is None or len(text) <= self.threshold:
            return text
        data = text.encode()
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return json.dumps({"__conveyor_blob__": f"sha256:{digest}"}, separators=(",", ":"))

    def resolve(self, text: str | None) -> str | None:
        """The stored text behind a reference (or ``text`` itself if it is not one)."""
        if text is None or not text.startswith(MARK):
            return text
        ref = json.loads(text)["__conveyor_blob__"]
        path = self._path(ref.removeprefix("sha256:"))
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"blob {ref} is missing from {self.dir} (is the blob directory shared by every worker?)") \
                from None

    def _path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest[2:]}.json"
