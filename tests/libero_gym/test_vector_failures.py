"""LiberoAsyncVectorEnv over the real simulation (state mode, 2 workers): failing workers never hang the caller,
never outlive it, and every later call says what went wrong first."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ClosedEnvironmentError

from libero_gym import LiberoAsyncVectorEnv, WorkerError

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0  # worker start-up and first reset on a loaded 2-core machine stay well below this
GRACE = 0.5
GOOD = np.zeros((2, 7), np.float32)


class Misbehaving(gym.Wrapper):
    """The real env plus ways to misbehave, reached with ``envs.call(...)`` inside the worker."""

    def ignore_term(self):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return os.getpid()

    def hang(self):
        time.sleep(3600)


def misbehaving_env():
    from libero_gym.env import LiberoObjectEnv

    return Misbehaving(LiberoObjectEnv(task=1, obs_mode="state"))


def _envs(timeout=TIMEOUT):
    return LiberoAsyncVectorEnv([misbehaving_env] * 2, timeout=timeout, terminate_grace=GRACE)


def _gone(pid):
    """True when ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _every_call(envs):
    return {
        "step": lambda: envs.step(GOOD),
        "step_async": lambda: envs.step_async(GOOD),
        "step_wait": lambda: envs.step_wait(),
        "reset": lambda: envs.reset(seed=0),
        "reset_async": lambda: envs.reset_async(seed=0),
        "reset_wait": lambda: envs.reset_wait(),
        "call": lambda: envs.call("instruction"),
        "call_async": lambda: envs.call_async("instruction"),
        "call_wait": lambda: envs.call_wait(),
        "get_attr": lambda: envs.get_attr("instruction"),
        "set_attr": lambda: envs.set_attr("next_init_state", 0),
        "render": lambda: envs.render(),
    }


def _assert_every_call_raises(envs, exc_type, match):
    for name, fn in _every_call(envs).items():
        with pytest.raises(exc_type, match=match):
            fn()
        assert True, name
    envs.close()  # closing a broken or closed vector env is fine
    envs.close()


def test_stopped_worker_raises_within_the_timeout_and_every_worker_is_killed():
    envs = _envs()
    pids = [p.pid for p in envs.processes]
    envs.reset(seed=0)
    envs.timeout = 2.0  # the first reset is done; now a short wait is enough
    os.kill(pids[1], signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"step\(\) did not finish within timeout=2.0s: worker 1 .*stopped"):
        envs.step(GOOD)
    assert time.monotonic() - t0 < 2.0 + GRACE + 10  # the timeout, the grace period and some slack
    assert all(_gone(pid) for pid in pids)
    _assert_every_call_raises(envs, WorkerError, r"refused: this vector env stopped working when step\(\) did not finish")


def test_hung_worker_that_ignores_sigterm_is_killed_with_sigkill():
    envs = _envs()
    assert len(set(envs.call("ignore_term"))) == 2
    envs.timeout = 2.0
    with pytest.raises(WorkerError, match=r"call\('hang'\) did not finish within timeout=2.0s: worker 0 .*worker 1"):
        envs.call("hang")
    assert [p.exitcode for p in envs.processes] == [-signal.SIGKILL] * 2
    _assert_every_call_raises(envs, WorkerError, r"call\('hang'\) did not finish")


def test_killed_worker_makes_set_attr_and_every_later_call_a_worker_error():
    envs = _envs()
    envs.reset(seed=0)
    os.kill(envs.processes[1].pid, signal.SIGKILL)
    envs.processes[1].join(10)
    with pytest.raises(WorkerError, match=r"set_attr\('next_init_state'\) failed: worker 1 .*killed by SIGKILL"):
        envs.set_attr("next_init_state", [0, 1])
    assert _gone(envs.processes[0].pid)
    _assert_every_call_raises(envs, WorkerError, r"stopped working when set_attr\('next_init_state'\) failed: worker 1")


def test_nan_action_raises_the_envs_value_error_and_the_vector_env_stays_usable():
    envs = _envs()
    try:
        envs.reset(seed=0)
        bad = GOOD.copy()
        bad[1, 2] = np.nan
        with pytest.raises(ValueError, match=r"sub-env 1: action .* has non-finite entries at index \[2\]"):
            envs.step(bad)
        # sub-env 0 stepped, sub-env 1 did not: stepping on would mix up the two; a reset is asked for
        with pytest.raises(RuntimeError, match=r"step\(\) needs a reset\(\) first: sub-env 1 raised ValueError"):
            envs.step(GOOD)
        assert envs.get_attr("instruction")[1].startswith("pick up the alphabet soup")
        envs.reset(seed=1)
        obs, reward, term, trunc, info = envs.step(GOOD)
        assert obs["state"].shape[0] == 2 and np.isfinite(obs["state"]).all()
        # a bad value for one sub-env: its error, then the same vector env goes on
        envs.set_attr("next_init_state", [0, 99])
        with pytest.raises(ValueError, match=r"sub-env 1: init_state=99 is not accepted"):
            envs.reset()
        envs.set_attr("next_init_state", [0, 3])
        _, info = envs.reset()
        assert list(info["init_state"]) == [0, 3]
    finally:
        envs.close()
    assert all(p.exitcode is not None for p in envs.processes)


def test_use_after_close_is_a_clear_error():
    envs = _envs()
    envs.close()
    assert all(p.exitcode == 0 for p in envs.processes)
    _assert_every_call_raises(envs, ClosedEnvironmentError, "was closed; create a new vector env")


def _run_script(body, timeout=120):
    code = textwrap.dedent(
        f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from libero_gym import LiberoAsyncVectorEnv
        from tests.libero_gym.test_vector_failures import misbehaving_env
        if __name__ == "__main__":
        """
    ) + textwrap.indent(textwrap.dedent(body), "    ")
    out_path = Path(tempfile.mkdtemp()) / "out"
    with open(out_path, "w") as out, open(out_path.with_suffix(".err"), "w") as err:
        # files, not pipes: a worker that outlived the script would hold a pipe open and hang the reader
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=out, stderr=err,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text, errors = out_path.read_text(), out_path.with_suffix(".err").read_text()
    pids = [int(x) for x in text.split()]
    assert len(pids) == 2, errors
    assert proc.returncode is not None
    return proc.returncode, pids


def _wait_gone(pids, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not _gone(p)]


@pytest.mark.parametrize("context", ["forkserver", "spawn"])
def test_workers_die_with_a_killed_parent_even_when_stopped_or_ignoring_sigterm(context):
    # Both workers are busy (an idle one would just see its pipe close) and ignore SIGTERM; under forkserver
    # worker 1 is also stopped, which only the kernel's parent-death signal can reach.
    stop = context == "forkserver"
    rc, pids = _run_script(
        f"""
        envs = LiberoAsyncVectorEnv([misbehaving_env] * 2, timeout=60, context={context!r})
        envs.call("ignore_term")
        pids = [p.pid for p in envs.processes]
        print(*pids, flush=True)
        envs.call_async("hang")
        time.sleep(1.0)
        if {stop}:
            os.kill(pids[1], signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert rc == -signal.SIGKILL
    try:
        assert _wait_gone(pids) == []
    finally:
        for p in pids:
            if not _gone(p):
                os.kill(p, signal.SIGKILL)


def test_parent_exiting_without_close_does_not_hang_on_workers_that_ignore_sigterm():
    rc, pids = _run_script(
        """
        envs = LiberoAsyncVectorEnv([misbehaving_env] * 2, timeout=60, terminate_grace=0.5)
        envs.call("ignore_term")
        print(*[p.pid for p in envs.processes], flush=True)
        sys.exit(0)  # no close(): the exit handler must still get rid of the workers
        """,
        timeout=90,
    )
    assert rc == 0
    assert _wait_gone(pids, 5.0) == []
