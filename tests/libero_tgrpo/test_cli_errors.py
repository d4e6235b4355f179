"""The command line's errors: one line on stderr and exit code 2, before any long work; ``--debug`` adds the
traceback. And the output directory of a subcommand belongs to one run (refused, resumed, overwritten, locked),
on the real env."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from libero_tgrpo.cli import main
from libero_tgrpo.files import DirLock

ROOT = Path(__file__).resolve().parents[2]


def _error(argv, capsys, code=2):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == code
    return capsys.readouterr().err


@pytest.mark.parametrize("argv,needles", [
    (["train", "--lr", "abc"], ["argument --lr", "'abc'", "could not convert"]),
    (["train", "--num-envs", "two"], ["argument --num-envs", "'two'"]),
    (["train", "--method", "grpo"], ["--method", "'grpo'", "tgrpo, step_only, traj_only, ppo"]),
    (["eval", "x.pt", "--bogus", "1"], ["unrecognized arguments: --bogus 1"]),
    (["eval"], ["missing required arguments: policy-file"]),
    (["run", "--resume", "--overwrite"], ["--overwrite and --resume"]),
])
def test_a_bad_option_value_is_one_short_line(argv, needles, capsys):
    err = _error(argv, capsys)
    assert err.count("\n") == 1 and err.startswith(f"libero-tgrpo {argv[0]}: error: "), err
    assert "╭" not in err and "Got errors" not in err
    for needle in needles:
        assert needle in err, (needle, err)


_PROBE = """
import sys
sys.path.insert(0, {root!r})
from libero_tgrpo.cli import main
try:
    main({argv!r})
except SystemExit as e:
    print(e.code, "torch" in sys.modules, "libero" in sys.modules)
"""


@pytest.mark.parametrize("command", [["run"], ["sft"], ["train"], ["eval", "runs/x"]])
def test_an_unwritable_output_directory_fails_before_any_work(command):
    argv = [*command, "--output-dir", "/proc/libero-tgrpo/out", "--quiet"]
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(root=str(ROOT), argv=argv)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    # exit code 2, and neither torch nor the simulator was imported: no env, no policy, no demonstrations
    assert proc.stdout.split() == ["2", "False", "False"], proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot write to the output directory '/proc/libero-tgrpo/out'" in proc.stderr


def test_resume_without_a_run_and_debug(tmp_path, capsys):
    out = tmp_path / "empty"
    err = _error(["train", "--resume", "--output-dir", str(out), "--quiet"], capsys)
    assert err.count("\n") == 1 and "nothing to resume" in err and "--resume-or-start" in err
    assert not out.exists()  # the failed command leaves no directory behind
    err = _error(["train", "--resume", "--output-dir", str(out), "--quiet", "--debug"], capsys)
    assert "Traceback (most recent call last)" in err and "RunDirError" in err
    assert err.strip().splitlines()[-1].startswith("libero-tgrpo train: error: nothing to resume")


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from libero_tgrpo.files import DirLock
lock = DirLock({path!r}).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_writer_gets_one_line_naming_the_directory_and_the_holder(tmp_path, capsys):
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=str(ROOT), path=str(out))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = _error(["train", "--output-dir", str(out), "--quiet"], capsys)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert err.count("\n") == 1 and f"'{out}' is in use by another process (pid {holder.pid})" in err
    with DirLock(out):  # free again once the holder is gone
        pass


def _rows(path):
    return [json.loads(line)["iteration"] for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_train_output_directory_belongs_to_one_run(tmp_path, capsys):
    out = tmp_path / "train"
    train = ["train", "--task", "4", "--quiet", "--hidden", "16", "--num-envs", "2", "--max-steps", "4",
             "--output-dir", str(out)]
    assert main([*train, "--iterations", "1"]) == 0
    capsys.readouterr()
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "train" and run["identity"]["seed"] == 0 and run["identity"]["task"] == 4
    # a second run in the same directory is refused, before any work
    err = _error([*train, "--iterations", "1"], capsys)
    assert "holds another run" in err and "--overwrite" in err and err.count("\n") == 1
    # a resume with other options is refused, naming each field with its old and new value
    err = _error([*train, "--resume", "--seed", "1", "--lr", "0.01", "--method", "step_only"], capsys)
    for needle in ("seed: 0 -> 1", "rl.lr: 3e-05 -> 0.01", "method: 'tgrpo' -> 'step_only'", "alphas: "):
        assert needle in err, (needle, err)
    assert _rows(out) == [0]
    # --overwrite removes every file of the old run first
    (out / "notes-of-the-old-run.txt").write_text("old")
    assert main([*train, "--iterations", "1", "--overwrite", "--seed", "1"]) == 0
    capsys.readouterr()
    assert not (out / "notes-of-the-old-run.txt").exists() and _rows(out) == [0]
    assert json.loads((out / "run.json").read_text())["identity"]["seed"] == 1
    # the same run resumed goes on, one row per iteration
    assert main([*train, "--iterations", "2", "--resume", "--seed", "1"]) == 0
    assert _rows(out) == [0, 1]
    capsys.readouterr()
