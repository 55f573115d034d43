"""Make sure a home holds the whole skeleton, owned by its user, with the configured mode.

useradd copies the skeleton itself, but silently skips it in some sandboxes (no
CAP_DAC_OVERRIDE) and leaves nothing behind if it is killed midway; this fills in whatever
is missing without ever overwriting a file the user already has.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class HomeBuilder:
    def __init__(self, skel: Path, mode: int = 0o700) -> None:
        self.skel = skel
        self.mode = mode

    def populate(self, home: Path, uid: int, gid: int) -> list[str]:
        """Create `home` and any missing skeleton entries; return what had to be added."""
        added: list[str] = []
        if not home.is_dir():
            home.mkdir(parents=True, mode=0o700)
            os.chown(home, uid, gid)
            added.append(".")
        for source_dir, dirnames, filenames in os.walk(self.skel):
            relative_dir = Path(source_dir).relative_to(self.skel)
            for entry in sorted(dirnames) + sorted(filenames):
                source = Path(source_dir) / entry
                target = home / relative_dir / entry
                if target.exists() or target.is_symlink():
                    continue
                if source.is_symlink():
                    target.symlink_to(os.readlink(source))
                elif source.is_dir():
                    target.mkdir(mode=source.stat().st_mode & 0o777)
                else:
                    shutil.copy2(source, target, follow_symlinks=False)
                os.lchown(target, uid, gid)
                added.append(str(relative_dir / entry))
        info = home.stat()
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.chown(home, uid, gid)
        os.chmod(home, self.mode)
        return added
