"""The trainer's adapter directory is replaced atomically: a writer killed at any point leaves the previous
adapter (tgrpo.policies.common.write_dir_atomically / recover_dir, used by tgrpo.train for ``OUTPUT_DIR/adapter``).

The kills are real: a child process writes and is killed with SIGKILL, mid-write or between the two renames.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tgrpo.policies.common import recover_dir, write_dir_atomically

ROOT = Path(__file__).resolve().parents[2]


def _write(files):
    def write(d):
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (d / name).write_text(text)

    return write


def _contents(d):
    return {p.name: p.read_text() for p in sorted(d.iterdir())}


def _killed_writer(path, kill_at):
    """Run a child that rewrites ``path`` with new files and SIGKILLs itself at ``kill_at``."""
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from tgrpo.policies import common

        def die():
            os.kill(os.getpid(), signal.SIGKILL)

        def write(d):
            d.mkdir(parents=True)
            (d / "adapter_config.json").write_text("new")
            if {kill_at!r} == "write":
                die()
            (d / "adapter_model.safetensors").write_text("new")

        if {kill_at!r} == "rename":
            real = os.replace
            def replace(a, b):  # the first rename (old adapter aside) happens, then the process dies
                real(a, b)
                die()
            common.os.replace = replace
        common.write_dir_atomically(Path({str(path)!r}), write)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL


def test_a_complete_write_replaces_the_directory(tmp_path):
    path = tmp_path / "adapter"
    write_dir_atomically(path, _write({"a.json": "1", "b.bin": "1"}))
    write_dir_atomically(path, _write({"a.json": "2"}))
    assert _contents(path) == {"a.json": "2"}  # the previous files are gone, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_failing_write_leaves_the_previous_directory(tmp_path):
    path = tmp_path / "adapter"
    write_dir_atomically(path, _write({"a.json": "old"}))

    def broken(d):
        _write({"a.json": "half"})(d)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_dir_atomically(path, broken)
    assert _contents(path) == {"a.json": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


@pytest.mark.parametrize("kill_at", ["write", "rename"])
def test_a_killed_writer_leaves_the_previous_adapter(tmp_path, kill_at):
    path = tmp_path / "adapter"
    write_dir_atomically(path, _write({"adapter_config.json": "old", "adapter_model.safetensors": "old"}))
    _killed_writer(path, kill_at)
    if kill_at == "write":
        assert _contents(path) == {"adapter_config.json": "old", "adapter_model.safetensors": "old"}
    else:
        assert not path.exists()  # killed between the renames: the previous adapter sits under ".old"
    lines = recover_dir(path)
    assert lines and _contents(path) == {"adapter_config.json": "old", "adapter_model.safetensors": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    assert recover_dir(path) == []


def test_recover_removes_a_left_over_old_copy_when_the_new_one_is_in_place(tmp_path):
    path = tmp_path / "adapter"
    write_dir_atomically(path, _write({"a.json": "new"}))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".adapter.old.{int(dead.stdout)}"
    _write({"a.json": "old"})(stale)
    assert recover_dir(path) and not stale.exists() and _contents(path) == {"a.json": "new"}


def test_the_trainer_keeps_the_previous_adapter_when_a_checkpoint_write_fails(tmp_path):
    """tgrpo.train writes OUTPUT_DIR/adapter through write_dir_atomically: a save_pretrained that fails half way
    at the second checkpoint leaves the first checkpoint's adapter files as they were."""
    import torch
    from tgrpo_fakes import make_vec_env, small_config

    import tgrpo

    class SavingPolicy(tgrpo.MLPTokenPolicy):
        calls = 0

        def save_pretrained(self, path):
            SavingPolicy.calls += 1
            path.mkdir(parents=True)
            (path / "adapter_config.json").write_text(f"checkpoint {SavingPolicy.calls}")
            if SavingPolicy.calls == 2:
                raise OSError("killed while writing")
            torch.save(self.state_dict(), path / "weights.pt")

    env = make_vec_env(2)
    policy = SavingPolicy(env.single_observation_space.shape[0], seed=0)
    cfg = small_config(tmp_path, iterations=2, max_steps=3, checkpoint_interval=1)
    with pytest.raises(OSError, match="killed while writing"):
        tgrpo.train(env, policy, cfg)
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter_config.json").read_text() == "checkpoint 1" and (adapter / "weights.pt").is_file()
    assert not [p for p in adapter.parent.iterdir() if p.name.startswith(".adapter")]
