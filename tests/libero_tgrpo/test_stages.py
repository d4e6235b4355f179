"""The run directory's stage helper (timing, skip-if-done on resume) and the atomic file writer."""

import json

import pytest

from libero_tgrpo.files import atomic_write, write_json
from libero_tgrpo.stages import RunDir


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
    write_json(tmp_path / "eval.json", {"success": [1]})
    calls = []

    def compute():
        calls.append(1)
        return {"success": [0]}

    assert RunDir(tmp_path, resume=True, say=_quiet).json_stage("eval", "eval.json", compute) == {"success": [1]}
    assert calls == []
    # without resume the stage runs again and overwrites the result
    assert RunDir(tmp_path, resume=False, say=_quiet).json_stage("eval", "eval.json", compute) == {"success": [0]}
    assert calls == [1]
    # a stage is reused only when every file it is done with exists
    run = RunDir(tmp_path, resume=True, say=_quiet)
    assert run.stage("video", lambda: "new", done=["eval.json", "video.mp4"], load=lambda: "old") == "new"
    (tmp_path / "video.mp4").write_bytes(b"x")
    assert run.stage("video", lambda: "new", done=["eval.json", "video.mp4"], load=lambda: "old") == "old"


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
