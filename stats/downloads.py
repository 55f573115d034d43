"""Downloads of `hub-stats serve` (the database snapshot, a view as CSV): each a copy on
disk that the downloads of the same poll share, a bounded number at once, streamed to each
client at its own pace and freed when its last client is done or dropped."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from typing import Any

import falcon

from hubsidecars.web import http_error

FILE_CHUNK = 256 * 1024
RETRY_AFTER_S = 30


class SharedCopy:
    """A copy on disk (no name left) that any number of downloads read at once, each at its
    own offset: ten clients fetching the same poll's data cost one copy, not ten."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.size = os.fstat(handle.fileno()).st_size
        self.readers = 0


class CopyCache:
    """The copies (snapshots or CSV files) that downloads of this worker are reading, one
    per thing and moment of the database (poll), made one at a time and freed when their
    last download ends. At most `limit` copies are held at once: a download that would need
    another is refused with 503 and Retry-After, so that slow or stalled clients across
    several polls cannot fill the disk with copies (a stalled client is dropped after the
    server's send timeout, which frees its copy)."""

    def __init__(self, what: str, limit: int, retry_after: int = RETRY_AFTER_S) -> None:
        self.what = what
        self.limit = limit
        self.retry_after = retry_after
        self._copies: dict[Any, SharedCopy] = {}
        self._making = asyncio.Lock()

    async def download(self, key: Callable[[], Any], make: Callable[[], Any]) -> FileDownload:
        """A download of the copy for `key()` (called on a thread), made by `make()` (an
        open binary file, on a thread) unless one is held already."""
        async with self._making:
            wanted = await asyncio.to_thread(key)
            copy = self._copies.get(wanted)
            if copy is None:
                if len(self._copies) >= self.limit:
                    raise http_error(
                        falcon.HTTP_503,
                        f"{len(self._copies)} copies of {self.what} are being downloaded, "
                        f"the most at once; try again in {self.retry_after} s",
                        headers={"Retry-After": str(self.retry_after)},
                    )  # fmt: skip
                copy = SharedCopy(await asyncio.to_thread(make))
                self._copies[wanted] = copy
            copy.readers += 1
        return FileDownload(copy, lambda: self._release(wanted, copy))

    def _release(self, key: Any, copy: SharedCopy) -> None:
        copy.readers -= 1
        if copy.readers == 0:
            if self._copies.get(key) is copy:
                del self._copies[key]
            copy.handle.close()

    def held(self) -> int:
        return len(self._copies)


class FileDownload:
    """One client's read of a SharedCopy, streamed as a response body: Falcon reads it with
    `read` and always calls `close` when the response ends (the client gone or dropped
    included), which lets the copy go. Should Falcon never get to stream it (the request
    cancelled first), the garbage collector does the same."""

    def __init__(self, copy: SharedCopy, release: Callable[[], None]) -> None:
        self.size = copy.size
        self._fd = copy.handle.fileno()
        self._offset = 0
        self._finalizer = weakref.finalize(self, release)

    async def read(self, size: int = FILE_CHUNK) -> bytes:
        chunk = await asyncio.to_thread(os.pread, self._fd, max(size, FILE_CHUNK), self._offset)
        self._offset += len(chunk)
        return chunk

    async def close(self) -> None:
        self._finalizer()
