"""No file we load runs code; earlier checkpoints still load; full disks and killed writers leave no debris."""

import errno
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from tgrpo_fakes import make_vec_env, small_config

import tgrpo
from tgrpo import checkpoint as ckpt_mod
from tgrpo.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    remove_stale_temp_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class _Evil:
    """Unpickling this calls ``os.system("touch <marker>")``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _write_evil(path, marker, **payload):
    torch.save({"iteration": 0, "policy": {"w": torch.zeros(2)}, "hook": _Evil(marker), **payload}, path)


def test_crafted_pickle_is_refused_naming_the_file_and_never_runs(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    _write_evil(path, marker)
    with pytest.raises(UnsafeCheckpointError, match=rf"refused to load '{path}'.*posix\.system"):
        load_checkpoint(path)
    assert not marker.exists()
    # the same file would have run the command under the old weights_only=False load
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_resume_from_a_crafted_checkpoint_is_refused(tmp_path):
    cfg = small_config(tmp_path, iterations=2, resume=True)
    os.makedirs(cfg.output_dir)
    marker = tmp_path / "pwned"
    _write_evil(os.path.join(cfg.output_dir, "checkpoint.pt"), marker)
    with pytest.raises(UnsafeCheckpointError, match="checkpoint.pt"):
        tgrpo.train(make_vec_env(2), None, cfg)
    assert not marker.exists()


def test_truncated_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.arange(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint.pt.*not a readable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoints_of_the_previous_format_still_load_and_resume(tmp_path):
    """Earlier versions stored np.random.get_state() (a uint32 array) and torch.__version__ (TorchVersion)."""
    cfg = small_config(tmp_path, iterations=2, checkpoint_interval=1)
    tgrpo.train(make_vec_env(2), None, cfg)
    path = tmp_path / "run" / "checkpoint.pt"
    payload = load_checkpoint(path)
    np.random.seed(3)
    legacy_np = np.random.get_state()
    payload["rng"]["numpy"] = legacy_np
    payload["torch_version"] = torch.__version__
    torch.save(payload, path)  # what the previous save_checkpoint wrote
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(path)

    loaded = load_checkpoint(path)
    np.random.seed(0)
    set_rng_state(loaded["rng"])
    state = np.random.get_state()
    assert state[0] == legacy_np[0] and np.array_equal(state[1], legacy_np[1]) and state[2] == legacy_np[2]
    result = tgrpo.train(make_vec_env(2), None, small_config(tmp_path, iterations=3, resume=True))
    assert [row["iteration"] for row in result.history] == [0, 1, 2]


def test_everything_written_loads_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    payload = {
        "rng": rng_state(),
        "version": torch.__version__,
        "where": tmp_path / "x",
        "metrics": {"success": np.float64(0.5), "counts": np.arange(3)},
    }
    path = save_checkpoint(tmp_path / "checkpoint.pt", payload)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    loaded = torch.load(path, weights_only=True)  # no allow-list needed
    assert loaded["where"] == str(tmp_path / "x") and loaded["metrics"]["success"] == 0.5
    assert torch.equal(loaded["metrics"]["counts"], torch.arange(3))
    draws = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(1), draws[2])


def test_objects_that_could_not_be_loaded_safely_are_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match=r"payload\['extra'\]\['cb'\] is a builtins.builtin_function_or_method"):
        save_checkpoint(tmp_path / "checkpoint.pt", {"extra": {"cb": len}})
    assert list(tmp_path.iterdir()) == []


class _FillingFile:
    """A real file that runs out of space after ``room`` bytes, as on a full disk."""

    def __init__(self, path, room):
        self.f = open(path, "wb")
        self.room = room

    def write(self, data):
        if len(data) > self.room:
            self.f.write(bytes(data)[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("room", [0, 300, 5000])
def test_disk_full_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch, room):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"iteration": 1, "w": torch.arange(4096.0)})
    monkeypatch.setattr(ckpt_mod, "_open_for_write", lambda p: _FillingFile(p, room))
    with pytest.raises(OSError, match=rf"no space left on device: {path}") as info:
        save_checkpoint(path, {"iteration": 2, "w": torch.zeros(4096)})
    assert info.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    old = load_checkpoint(path)
    assert old["iteration"] == 1 and torch.equal(old["w"], torch.arange(4096.0))


def test_disk_full_at_fsync_is_reported_the_same_way(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"iteration": 1})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.os, "fsync", no_space)
    with pytest.raises(OSError, match="no space left on device"):
        save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert load_checkpoint(path)["iteration"] == 1


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_killed_writers_are_removed_at_the_next_save_and_resume(tmp_path):
    cfg = small_config(tmp_path, iterations=2)
    tgrpo.train(make_vec_env(2), None, cfg)
    run = tmp_path / "run"
    dead = run / f".checkpoint.pt.tmp.{_dead_pid()}"
    live = run / f".checkpoint.pt.tmp.{os.getppid()}"  # a process that still runs: maybe writing it now
    for p in (dead, live):
        p.write_bytes(b"torn")
    tgrpo.train(make_vec_env(2), None, small_config(tmp_path, iterations=3, resume=True))
    assert not dead.exists() and live.exists()
    dead2 = run / f".checkpoint.pt.tmp.{_dead_pid()}"
    dead2.write_bytes(b"torn")
    save_checkpoint(run / "checkpoint.pt", {"iteration": 9})
    assert not dead2.exists() and live.exists()
    assert remove_stale_temp_files(run / "checkpoint.pt") == []
