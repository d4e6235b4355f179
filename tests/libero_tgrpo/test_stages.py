"""The run directory: its stage helper (timing, skip-if-done on resume), its ownership (one run per directory,
resume only with the same options, overwrite, one writer at a time) and the atomic file writer."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.files import DirLockedError, RunDirError, atomic_write, write_json
from libero_tgrpo.stages import RunDir, run_identity

ROOT = Path(__file__).resolve().parents[2]


def _quiet(msg):
    pass


def test_a_stage_runs_saves_and_is_timed(tmp_path):
    run = RunDir(tmp_path / "run", say=_quiet)
    calls = []
    value = run.json_stage("eval", "eval.json", lambda: calls.append(1) or {"success": [1, 0]})
    assert value == {"success": [1, 0]} and calls == [1]
    assert json.loads((tmp_path / "run/eval.json").read_text()) == value
    assert run.timings["eval"] >= 0 and run.elapsed() >= run.timings["eval"]


def test_resume_reuses_a_finished_stage_and_only_then(tmp_path):
    with RunDir(tmp_path, say=_quiet) as run:
        run.json_stage("eval", "eval.json", lambda: {"success": [1]})
    calls = []

    def compute():
        calls.append(1)
        return {"success": [0]}

    with RunDir(tmp_path, resume=True, say=_quiet) as run:
        assert run.json_stage("eval", "eval.json", compute) == {"success": [1]}
    assert calls == []
    # a stage is reused only when every file it is done with exists
    with RunDir(tmp_path, resume=True, say=_quiet) as run:
        assert run.stage("video", lambda: "new", done=["eval.json", "video.mp4"], load=lambda: "old") == "new"
        (tmp_path / "video.mp4").write_bytes(b"x")
        assert run.stage("video", lambda: "new", done=["eval.json", "video.mp4"], load=lambda: "old") == "old"
    # a new run (overwrite) runs the stage again
    with RunDir(tmp_path, overwrite=True, say=_quiet) as run:
        assert run.json_stage("eval", "eval.json", compute) == {"success": [0]}
    assert calls == [1]


def _identity(**kw):
    return run_identity(PipelineConfig(**kw))


def _a_run(path, **kw):
    """A run in ``path`` that wrote a result (a record alone is a run that failed before writing anything)."""
    with RunDir(path, say=_quiet, **kw) as run:
        run.json_stage("eval", "eval.json", lambda: {"success": [1]})


def test_a_directory_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    RunDir(tmp_path, identity=_identity(), say=_quiet).close()
    RunDir(tmp_path, identity=_identity(), say=_quiet).close()  # it wrote nothing: the directory is free
    _a_run(tmp_path, identity=_identity())
    with pytest.raises(RunDirError, match="holds another run.*--resume.*--overwrite"):
        RunDir(tmp_path, identity=_identity(), say=_quiet)
    # files of an earlier version's run (no run.json) count as a run too
    old = tmp_path / "old"
    old.mkdir()
    (old / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(RunDirError, match="holds another run"):
        RunDir(old, say=_quiet)
    # other files do not make a run
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    RunDir(tmp_path / "notes", say=_quiet).close()


def test_overwrite_removes_every_file_of_the_old_run(tmp_path):
    with RunDir(tmp_path, identity=_identity(seed=0), say=_quiet) as run:
        run.json_stage("eval", "eval_sft.json", lambda: {"success": [1]})
    (tmp_path / "tgrpo").mkdir()
    (tmp_path / "tgrpo" / "checkpoint.pt").write_bytes(b"old")
    (tmp_path / "tgrpo" / "metrics.csv").write_text("iteration\n0\n")
    with RunDir(tmp_path, identity=_identity(seed=1), overwrite=True, say=_quiet) as run:
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "run.json"]
        assert run.record["identity"]["seed"] == 1 and not run.resume
    with pytest.raises(RunDirError, match="resume and overwrite"):
        RunDir(tmp_path, resume=True, overwrite=True, say=_quiet)
    # an input of the new run inside the directory is never removed
    (tmp_path / "demos.npz").write_bytes(b"demos")
    with pytest.raises(RunDirError, match="an input of this run"):
        RunDir(tmp_path, overwrite=True, inputs=[tmp_path / "demos.npz"], say=_quiet)
    assert (tmp_path / "demos.npz").read_bytes() == b"demos"


def test_resume_refuses_other_options_naming_each_field_with_old_and_new_values(tmp_path):
    _a_run(tmp_path, identity=_identity())
    changed = _identity(task=5, seed=1, method="step_only", policy="vision", hidden=(64,), alpha1=2.0,
                        **{"rl": PipelineConfig().rl.__class__(lr=1e-3)})
    with pytest.raises(RunDirError) as e:
        RunDir(tmp_path, resume=True, identity=changed, say=_quiet)
    message = str(e.value)
    for needle in ("task: 4 -> 5", "seed: 0 -> 1", "method: 'tgrpo' -> 'step_only'", "policy: 'state' -> 'vision'",
                   "hidden: '128,128' -> '64'", "alpha1: None -> 2.0", "alphas: [0.35, 0.65] -> ",
                   "rl.lr: 3e-05 -> 0.001"):
        assert needle in message, (needle, message)
    # what only says where and how long a run goes on may change
    more = _identity(output_dir="elsewhere", progress=False, resume=True, **{"rl": PipelineConfig().rl})
    more["rl.iterations"] = 99
    with RunDir(tmp_path, resume=True, identity=more, say=_quiet) as run:
        assert run.resume


def test_resume_compares_the_digests_of_the_run_inputs(tmp_path):
    demos = tmp_path / "demos.npz"
    demos.write_bytes(b"first set")
    with RunDir(tmp_path / "run", say=_quiet) as run:
        run.check_digest("demos", demos)
        run.json_stage("eval", "eval.json", lambda: {"success": [1]})
    with RunDir(tmp_path / "run", resume=True, say=_quiet) as run:
        run.check_digest("demos", demos)  # the same file: accepted
        demos.write_bytes(b"another set")
        with pytest.raises(RunDirError, match="demos digest: sha256:[0-9a-f]+ -> sha256:[0-9a-f]+"):
            run.check_digest("demos", demos)


def test_resume_without_a_run_is_an_error_unless_asked_to_start(tmp_path):
    with pytest.raises(RunDirError, match="nothing to resume.*--resume-or-start"):
        RunDir(tmp_path / "a", resume=True, say=_quiet)
    with RunDir(tmp_path / "a", resume=True, start_if_missing=True, say=_quiet) as run:
        assert not run.resume and (tmp_path / "a/run.json").is_file()
        run.json_stage("eval", "eval.json", lambda: {"success": [1]})
    with RunDir(tmp_path / "a", resume=True, start_if_missing=True, say=_quiet) as run:
        assert run.resume


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from libero_tgrpo.files import DirLock
lock = DirLock({path!r}).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_writer_is_refused_at_once_and_the_lock_dies_with_its_holder(tmp_path):
    _a_run(tmp_path / "a")
    with RunDir(tmp_path / "a", resume=True, say=_quiet):
        with pytest.raises(DirLockedError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
            RunDir(tmp_path / "a", resume=True, say=_quiet)
    RunDir(tmp_path / "a", resume=True, say=_quiet).close()  # released on close

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=str(ROOT), path=str(tmp_path / "b"))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(DirLockedError) as e:
            RunDir(tmp_path / "b", say=_quiet)
        assert time.monotonic() - t0 < 5  # refused, not waited for
        assert f"pid {holder.pid}" in str(e.value) and str(tmp_path / "b") in str(e.value)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
        holder.stdout.close()
    assert (tmp_path / "b" / ".lock").exists()  # the file stays, the lock does not
    RunDir(tmp_path / "b", say=_quiet).close()


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "d" / "result.json"
    write_json(path, {"a": 1})

    def broken(p):
        p.write_text('{"a": ')
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no half-written file left
    assert write_json(path, {"b": (1, 2)}) == path and json.loads(path.read_text()) == {"b": [1, 2]}


def test_a_run_recorded_before_the_expert_options_existed_resumes_as_the_default_expert(tmp_path):
    """``demos.expert_close_steps``, ``demos.expert_lift`` and the ``select`` options came after runs had been
    recorded: a record without them reads as 6, "timer" and "final" (what those runs did), so they resume with the
    defaults and are refused with another value, naming it."""
    from libero_tgrpo.rundir import ADDED_LATER, RUN_RECORD

    cfg = PipelineConfig()
    assert ADDED_LATER == {"demos.expert_close_steps": cfg.demos.expert_close_steps,
                           "demos.expert_lift": cfg.demos.expert_lift, "select": cfg.select,
                           "select_placements": cfg.select_placements, "select_points": cfg.select_points} == {
        "demos.expert_close_steps": 6, "demos.expert_lift": "timer", "select": "final", "select_placements": 30,
        "select_points": 3}
    _a_run(tmp_path, identity=_identity())
    record_path = tmp_path / RUN_RECORD
    record = json.loads(record_path.read_text())
    assert record["identity"].pop("demos.expert_close_steps") == 6
    assert record["identity"].pop("demos.expert_lift") == "timer"
    assert record["identity"].pop("select") == "final"  # runs from before held-out selection kept their last policy
    record["identity"].pop("select_placements"), record["identity"].pop("select_points")
    record_path.write_text(json.dumps(record))
    with RunDir(tmp_path, resume=True, identity=_identity(), say=_quiet) as run:
        assert run.resume
    for key, value, shown in (("demos.expert_close_steps", 0, "6 -> 0"), ("demos.expert_lift", "still",
                                                                         "'timer' -> 'still'"),
                              ("select", "heldout", "'final' -> 'heldout'")):
        record_path.write_text(json.dumps(record))
        other = run_identity(PipelineConfig().replace(**{key: value}))
        with pytest.raises(RunDirError, match=f"{key}: {shown}"):
            RunDir(tmp_path, resume=True, identity=other, say=_quiet)
