"""A demonstration worker that dies is reported, not waited for."""

import os
import signal
import threading
import time

import pytest

from libero_tgrpo.demos import generate_demos


def _descendants(pid: int) -> list[int]:
    """Pids of every process below ``pid`` (Linux /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_a_killed_worker_raises_a_clear_error_instead_of_hanging():
    """The workers are the forkserver's children, the grandchildren of this process."""
    killed = []

    def kill_a_worker():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            grandchildren = [p for p in _descendants(os.getpid()) if p not in _children(os.getpid())]
            if grandchildren:
                time.sleep(3)  # let it start an episode
                os.kill(grandchildren[0], signal.SIGKILL)
                killed.append(grandchildren[0])
            time.sleep(0.5)

    threading.Thread(target=kill_a_worker, daemon=True).start()
    with pytest.raises(RuntimeError, match="a demonstration worker died"):
        generate_demos(4, 30, seed=5, workers=2, progress=False)
    assert killed


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


_INTERRUPTED = """
import multiprocessing as mp
import signal
import sys

sys.path.insert(0, {root!r})
from libero_tgrpo.demos import generate_demos

workers = []


def interrupt(signum, frame):  # Ctrl-C (the command line turns SIGTERM into the same) once the workers run
    if not mp.active_children():
        signal.alarm(1)
        return
    workers.extend(mp.active_children())
    raise KeyboardInterrupt


signal.signal(signal.SIGALRM, interrupt)
signal.alarm(5)
try:
    generate_demos(4, 40, workers=2, progress=False)
    print("finished")
except KeyboardInterrupt:
    print("interrupted", sorted(p.exitcode for p in workers))
"""


def test_an_interrupt_kills_the_workers_instead_of_waiting_for_their_episodes():
    """Ctrl-C or SIGTERM during the demonstration pool ends it at once: the workers are killed (exit code
    -SIGKILL), not left to finish the episodes they run (exit code 0)."""
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED.format(root=root)], capture_output=True, text=True,
                          timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"interrupted {[-signal.SIGKILL, -signal.SIGKILL]}", proc.stdout + proc.stderr[-2000:]
