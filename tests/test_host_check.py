"""The suite's own host check (realparts/hostcheck.py) sees each kind of leftover."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from realparts.hostcheck import MARKER, HostSnapshot, leftovers

LISTENER = "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); " \
           "print(s.getsockname()[1], flush=True); time.sleep(60)"  # fmt: skip


def test_each_kind_of_leftover_is_named_and_nothing_once_put_back(tmp_path):
    remounted, added = tmp_path / "remounted", tmp_path / "added"
    remounted.mkdir()
    added.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(remounted)], check=True)
    run_id = uuid.uuid4().hex
    stray_tmp = None
    listener = None
    try:
        before = HostSnapshot.take()
        subprocess.run(["mount", "-o", "remount,ro", str(remounted)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(added)], check=True)
        listener = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE,
                                    text=True, env={**os.environ, MARKER: run_id})  # fmt: skip
        port = listener.stdout.readline().strip()
        stray_tmp = Path(tempfile.mkdtemp(prefix="hostcheck-", dir="/tmp"))
        found = leftovers(before, HostSnapshot.take(), run_id, [str(tmp_path)], {os.getpid()})
        text = "\n".join(found)
        assert f"mount {remounted} changed from" in text and " to ro," in text, text
        assert f"mount {added} (tmpfs) was added" in text, text
        assert f"port tcp:{port} is still listened on by pid {listener.pid}" in text, text
        assert f"process {listener.pid} is still running" in text, text
        assert f"{stray_tmp} was left behind" in text, text
        # A process of someone else (without the run's marker, outside its paths) is not ours.
        others = leftovers(before, HostSnapshot.take(), "another-run", [str(tmp_path)], {os.getpid()})
        assert not [line for line in others if line.startswith(("process", "port"))], others
        # Put back, nothing of this test's is left (other work on the machine may change /tmp
        # meanwhile: only this test's things count).
        listener.kill()
        listener.wait()
        stray_tmp.rmdir()
        subprocess.run(["umount", str(added)], check=True)
        subprocess.run(["mount", "-o", "remount,rw", str(remounted)], check=True)
        mine = (str(tmp_path), str(stray_tmp), f"pid {listener.pid}", f"process {listener.pid}")
        after = leftovers(before, HostSnapshot.take(), run_id, [str(tmp_path)], {os.getpid()})
        assert [line for line in after if any(thing in line for thing in mine)] == []
    finally:
        if listener is not None and listener.poll() is None:
            listener.kill()
            listener.wait()
        if stray_tmp is not None and stray_tmp.exists():
            stray_tmp.rmdir()
        for point in (added, remounted):
            while subprocess.run(["umount", str(point)], capture_output=True).returncode == 0:
                pass
