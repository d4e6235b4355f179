"""Vector environments for LIBERO-Object: an async vector env that never hangs and fails clearly.

How :class:`LiberoAsyncVectorEnv` handles failures:

* A worker that dies (segfault, OOM kill), hangs, is stopped (SIGSTOP) or ignores SIGTERM makes the call
  that waits for it raise :class:`WorkerError` within ``timeout`` seconds (a death is seen at once). Every
  worker is then killed: SIGTERM (plus SIGCONT, so that a stopped worker receives it), then SIGKILL after
  ``terminate_grace`` seconds. From then on every method raises :class:`WorkerError` naming that first
  failure; create a new vector env.
* A worker never outlives the process that created the vector env: it watches that process (a ``pidfd`` on
  Linux, polling elsewhere) and exits when it is gone; under the default ``forkserver`` start method it also
  asks the kernel for SIGKILL when its parent (the fork server, which lives exactly as long as the creating
  process) dies, which reaches a stopped worker too. At interpreter exit, open vector envs are closed.
* An exception raised by a sub-env's own code, e.g. the ``ValueError`` of ``LiberoObjectEnv`` for an
  action with ``nan``, is re-raised in the caller with its type and message, prefixed with the sub-env's
  index (peers' ``AsyncVectorEnv`` do the same). The worker keeps running and the vector env stays
  usable: ``reset``, ``call``, ``get_attr``, ``set_attr`` and ``render`` can be called again at once. After
  a ``step`` that raised, the other sub-envs have stepped while the failing one did not, so the next
  ``step`` raises ``RuntimeError`` until ``reset`` has brought them back in step.
* Calling any method after :meth:`~gymnasium.vector.VectorEnv.close` raises
  ``gymnasium.error.ClosedEnvironmentError``; closing twice is allowed.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import multiprocessing as mp
import multiprocessing.connection
import multiprocessing.util  # noqa: F401  (its exit handler is registered first, so ours runs before it)
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from copy import deepcopy
from multiprocessing.reduction import ForkingPickler
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.spaces.utils import is_space_dtype_shape_equiv
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.async_vector_env import AsyncState
from gymnasium.vector.utils import concatenate, iterate, write_to_shared_memory

__all__ = ["LiberoAsyncVectorEnv", "WorkerError", "make_vec"]

DEFAULT_TIMEOUT_S = 300.0
"""Seconds an async call may take before the vector env gives up on a worker (first resets build the
simulator, which takes a few seconds per env on a loaded CPU)."""

TERMINATE_GRACE_S = 2.0
"""Seconds a worker gets to exit after SIGTERM (when the vector env is closed or broken) before SIGKILL."""

CLOSE_TIMEOUT_S = 30.0
"""Longest wait for workers to answer a normal ``close()`` (capped by ``timeout``); then they are killed."""

PARENT_POLL_S = 1.0
"""Where no ``pidfd`` is available, how often a worker checks that its creating process still runs."""

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class WorkerError(RuntimeError):
    """A sub-environment worker crashed, died, hung or did not answer in time.

    Raised by the call that saw the failure, and by every later call on the same vector env (which is
    unusable from then on: its workers were killed).
    """


_LIVE_ENVS: weakref.WeakSet[LiberoAsyncVectorEnv] = weakref.WeakSet()


@atexit.register
def _close_live_envs() -> None:
    """Kill the workers of vector envs still open at exit (before multiprocessing joins them forever)."""
    for envs in list(_LIVE_ENVS):
        try:
            envs.close(terminate=True)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class LiberoAsyncVectorEnv(AsyncVectorEnv):
    """:class:`gymnasium.vector.AsyncVectorEnv` with bounded waits, killed workers and clear errors.

    See the module docstring for what happens on each kind of failure. The default start method is
    ``"forkserver"``: each worker starts from a clean process, so no EGL/OpenGL context is ever inherited
    across ``fork``. Scripts that create it need an ``if __name__ == "__main__":`` guard.

    Args:
        env_fns: functions that create the sub-envs.
        timeout: seconds any call may wait for the workers (None: forever, not recommended).
        context: multiprocessing start method.
        terminate_grace: seconds between SIGTERM and SIGKILL when workers are stopped.
        **kwargs: other arguments of :class:`gymnasium.vector.AsyncVectorEnv` (not ``worker``).

    Example:
        >>> import gymnasium as gym, libero_gym  # doctest: +SKIP
        >>> envs = gym.make_vec("LiberoObject-Task4-v0", num_envs=2, obs_mode="state")  # doctest: +SKIP
        >>> obs, info = envs.reset(seed=0)  # doctest: +SKIP
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        context: str | None = "forkserver",
        terminate_grace: float = TERMINATE_GRACE_S,
        **kwargs: Any,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout={timeout!r} is not accepted: give seconds > 0, or None to wait forever.")
        if not isinstance(terminate_grace, (int, float)) or not terminate_grace >= 0:
            raise ValueError(f"terminate_grace={terminate_grace!r} is not accepted: give seconds >= 0.")
        if kwargs.get("worker") is not None:
            raise ValueError("LiberoAsyncVectorEnv runs its own worker; `worker=` is not accepted.")
        kwargs.pop("worker", None)
        self.timeout = timeout
        self.terminate_grace = float(terminate_grace)
        self._failure: str | None = None
        self._needs_reset: str | None = None
        self._pending = ""  # the call whose answers are awaited, for messages
        self.processes: list[mp.process.BaseProcess] = []
        self.parent_pipes: list[Any] = []
        worker = functools.partial(_worker, parent_pid=os.getpid())
        try:
            super().__init__(env_fns, context=context, worker=worker, **kwargs)
        except BaseException:
            self._kill_workers()
            self.closed = True
            raise
        _LIVE_ENVS.add(self)

    # ------------------------------------------------------------------ public API, every call guarded
    def reset(self, *, seed=None, options=None):  # noqa: D102
        self.reset_async(seed=seed, options=options)
        return self.reset_wait()

    def reset_async(self, seed=None, options=None) -> None:  # noqa: D102
        self._check_usable("reset()")
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset() got {len(seeds)} seeds for {self.num_envs} sub-envs: give an int or one per sub-env.")
        options = dict(options) if options is not None else None
        mask = np.ones(self.num_envs, dtype=bool)
        if options is not None and "reset_mask" in options:
            mask = options.pop("reset_mask")
            if not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (self.num_envs,)):
                raise ValueError(
                    f"options['reset_mask'] must be a bool numpy array of shape ({self.num_envs},), got {mask!r}."
                )
            if not mask.any():
                raise ValueError("options['reset_mask'] must select at least one sub-env.")
        messages = [
            ("reset", {"seed": s, "options": options}) if m else ("reset-noop", None)
            for s, m in zip(seeds, mask, strict=True)
        ]
        self._post("reset()", messages, AsyncState.WAITING_RESET)

    def reset_wait(self, timeout: float | None = None):  # noqa: D102
        self._check_usable("reset_wait()")
        self._expect(AsyncState.WAITING_RESET, "reset_wait", "reset_async")
        replies = self._receive(self._pending, timeout)
        self._needs_reset = None
        infos: dict[str, Any] = {}
        for i, (_, info) in enumerate(replies):
            infos = self._add_info(infos, info, i)
        if not self.shared_memory:
            self.observations = concatenate(self.single_observation_space, [r[0] for r in replies], self.observations)
        return (deepcopy(self.observations) if self.copy else self.observations), infos

    def step(self, actions):  # noqa: D102
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions) -> None:  # noqa: D102
        self._check_usable("step()")
        if self._needs_reset is not None:
            raise RuntimeError(
                f"step() needs a reset() first: {self._needs_reset}, while the other sub-envs stepped, so the "
                "sub-envs are out of step with each other."
            )
        try:
            per_env = list(iterate(self.action_space, actions))
        except Exception as e:  # noqa: BLE001 - re-raised with the expected layout
            raise ValueError(f"actions do not fit the action space {self.action_space}: {e}") from e
        if len(per_env) != self.num_envs:
            raise ValueError(f"step() got actions for {len(per_env)} sub-envs; there are {self.num_envs}.")
        self._post("step()", [("step", a) for a in per_env], AsyncState.WAITING_STEP)

    def step_wait(self, timeout: float | None = None):  # noqa: D102
        self._check_usable("step_wait()")
        self._expect(AsyncState.WAITING_STEP, "step_wait", "step_async")
        try:
            replies = self._receive(self._pending, timeout)
        except WorkerError:
            raise
        except Exception as e:
            self._needs_reset = f"sub-env {getattr(e, '_sub_env', '?')} raised {type(e).__name__} in the last step()"
            raise
        infos: dict[str, Any] = {}
        for i, reply in enumerate(replies):
            infos = self._add_info(infos, reply[4], i)
        if not self.shared_memory:
            self.observations = concatenate(self.single_observation_space, [r[0] for r in replies], self.observations)
        return (
            deepcopy(self.observations) if self.copy else self.observations,
            np.array([r[1] for r in replies], dtype=np.float64),
            np.array([r[2] for r in replies], dtype=np.bool_),
            np.array([r[3] for r in replies], dtype=np.bool_),
            infos,
        )

    def call(self, name: str, *args: Any, **kwargs: Any):  # noqa: D102
        self.call_async(name, *args, **kwargs)
        return self.call_wait()

    def call_async(self, name: str, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        what = f"call({name!r})"
        self._check_usable(what)
        self._post(what, [("_call", (name, args, kwargs))] * self.num_envs, AsyncState.WAITING_CALL)

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:  # noqa: D102
        self._check_usable("call_wait()")
        self._expect(AsyncState.WAITING_CALL, "call_wait", "call_async")
        return tuple(self._receive(self._pending, timeout))

    def get_attr(self, name: str) -> tuple[Any, ...]:  # noqa: D102
        return self.call(name)

    def render(self):  # noqa: D102
        return self.call("render")

    def set_attr(self, name: str, values: Any) -> None:  # noqa: D102
        what = f"set_attr({name!r})"
        self._check_usable(what)
        if not isinstance(values, (list, tuple)):
            values = [values for _ in range(self.num_envs)]
        if len(values) != self.num_envs:
            raise ValueError(
                f"set_attr({name!r}) got {len(values)} values for {self.num_envs} sub-envs: give one value, or a "
                "list/tuple with one value per sub-env."
            )
        self._post(what, [("_setattr", (name, v)) for v in values], AsyncState.WAITING_CALL)
        self._receive(what, None)

    # ------------------------------------------------------------------ closing
    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Stop the workers: ask them to close (unless ``terminate``), then SIGTERM, then SIGKILL; never hangs.

        Args:
            timeout: seconds to wait for the workers' answers; None: ``min(timeout, CLOSE_TIMEOUT_S)``.
            terminate: skip asking, stop the workers at once.
        """
        _LIVE_ENVS.discard(self)
        if self._failure is None and not terminate:
            limit = timeout if timeout is not None else min(self.timeout or CLOSE_TIMEOUT_S, CLOSE_TIMEOUT_S)
            deadline = time.monotonic() + limit
            try:
                if self._state != AsyncState.DEFAULT:  # answers of a pending call come first
                    self._collect(deadline)
                    self._state = AsyncState.DEFAULT
                for pipe in self.parent_pipes:
                    pipe.send(("close", None))
                self._collect(deadline)
                for p in self.processes:
                    p.join(max(0.0, deadline - time.monotonic()))
            except (OSError, EOFError, _NoAnswer):
                pass
        self._kill_workers()

    def _kill_workers(self) -> None:
        """SIGTERM (and SIGCONT) every live worker, SIGKILL those alive after ``terminate_grace``; reap all."""
        procs = [p for p in getattr(self, "processes", []) if p.pid is not None and p.exitcode is None]
        for p in procs:
            _signal(p, signal.SIGTERM)
            _signal(p, signal.SIGCONT)  # a stopped process only acts on SIGTERM once continued
        deadline = time.monotonic() + getattr(self, "terminate_grace", TERMINATE_GRACE_S)
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.exitcode is None:
                _signal(p, signal.SIGKILL)
        for p in procs:
            p.join(5.0)  # SIGKILL cannot be ignored; bounded anyway
        for pipe in getattr(self, "parent_pipes", []):
            if pipe is not None:
                pipe.close()

    # ------------------------------------------------------------------ internals
    def _check_spaces(self) -> None:
        message = ("_check_spaces", (self.observation_mode, self.single_observation_space, self.single_action_space))
        self._post("starting the workers", [message] * self.num_envs, AsyncState.WAITING_CALL)
        replies = self._receive("starting the workers", None)
        same_obs, same_act = zip(*replies, strict=True)
        if not all(same_obs):
            raise RuntimeError(
                f"the sub-envs' observation spaces differ (observation_mode={self.observation_mode!r}); give "
                "sub-envs with equal spaces, or observation_mode='different'."
            )
        if not all(same_act):
            raise RuntimeError(f"some sub-envs have an action space other than {self.single_action_space}.")

    def _check_usable(self, what: str) -> None:
        if self._failure is not None:
            raise WorkerError(
                f"{what} refused: this vector env stopped working when {self._failure}. Its workers were "
                "killed; create a new vector env."
            )
        if self.closed:
            raise ClosedEnvironmentError(
                f"{what} called on a {type(self).__name__} that was closed; create a new vector env."
            )

    def _expect(self, state: AsyncState, wait_name: str, async_name: str) -> None:
        if self._state != state:
            raise NoAsyncCallError(f"{wait_name}() called without a prior {async_name}().", state.value)

    def _post(self, what: str, messages: list[Any], state: AsyncState) -> None:
        """Send one message per worker and enter ``state``; nothing is sent if a message cannot be pickled."""
        if self._state != AsyncState.DEFAULT:
            raise AlreadyPendingCallError(
                f"{what} called while waiting for a pending call to `{self._state.value}` to complete.",
                str(self._state.value),
            )
        payloads = [ForkingPickler.dumps(m) for m in messages]  # the caller's errors surface before any send
        try:
            for pipe, payload in zip(self.parent_pipes, payloads, strict=True):
                pipe.send_bytes(payload)
        except (OSError, EOFError) as e:
            self._fail(what, f"{what} failed: " + (self._describe_dead() or f"sending to a worker failed ({e!r})"), e)
        self._state = state
        self._pending = what

    def _collect(self, deadline: float | None) -> tuple[dict[int, Any], list[int], list[int]]:
        """Replies received until ``deadline``: ``({index: reply}, dead indices, silent indices)``."""
        replies: dict[int, Any] = {}
        dead: list[int] = []
        pending = set(range(self.num_envs))
        while pending:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            waitables = {self.parent_pipes[i]: i for i in pending}
            sentinels = {self.processes[i].sentinel: i for i in pending}
            ready = mp.connection.wait([*waitables, *sentinels], timeout=remaining)
            for obj in ready:
                i = waitables.get(obj, sentinels.get(obj))
                if i not in pending:
                    continue
                pipe = self.parent_pipes[i]
                try:
                    if obj in sentinels and not pipe.poll():  # died without an answer
                        raise EOFError
                    replies[i] = pipe.recv()
                except (EOFError, OSError):
                    dead.append(i)
                pending.discard(i)
            if dead:  # the vector env is broken: no need to wait for the others
                break
        if pending and deadline is not None and not dead:
            raise _NoAnswer(sorted(pending))
        return replies, dead, sorted(pending)

    def _receive(self, what: str, timeout: float | None) -> list[Any]:
        """One reply per worker, in order; a dead or silent worker breaks the vector env (WorkerError)."""
        limit = timeout if timeout is not None else self.timeout
        deadline = None if limit is None else time.monotonic() + limit
        try:
            replies, dead, _ = self._collect(deadline)
        except _NoAnswer as e:
            silent = ", ".join(f"worker {i} ({self._proc_state(i)})" for i in e.indices)
            self._fail(
                what,
                f"{what} did not finish within timeout={limit}s: {silent} did not answer",
                hint=" Pass a larger `timeout` if the env is just slow.",
            )
        except BaseException as e:  # e.g. KeyboardInterrupt: answers are now out of order
            self._fail(what, f"{what} was interrupted by {type(e).__name__}", e, reraise=e)
        if dead:
            self._fail(what, f"{what} failed: " + ", ".join(self._dead_description(i) for i in dead))
        self._state = AsyncState.DEFAULT
        ordered = [replies[i] for i in range(self.num_envs)]
        self._raise_env_error(what, ordered)
        return [value for value, _ in ordered]

    def _raise_env_error(self, what: str, replies: list[Any]) -> None:
        """Re-raise the first exception a sub-env raised (the replies of the others are dropped)."""
        for i, (value, ok) in enumerate(replies):
            if not ok:
                etype, name, message, trace = value
                text = f"sub-env {i}: {message}"
                try:
                    exc = etype(text) if isinstance(etype, type) and issubclass(etype, Exception) else None
                except Exception:  # noqa: BLE001 - exception types with other constructors
                    exc = None
                if exc is None:
                    exc = RuntimeError(f"sub-env {i} raised {name} in {what}: {message}")
                if hasattr(exc, "add_note"):
                    exc.add_note(f"Traceback in the worker of sub-env {i}:\n{trace}")
                exc._sub_env = i  # type: ignore[attr-defined]
                raise exc

    def _fail(
        self,
        what: str,
        description: str,
        cause: BaseException | None = None,
        hint: str = "",
        reraise: BaseException | None = None,
    ) -> None:
        """Record the first failure, kill all workers, raise WorkerError (or re-raise ``reraise``)."""
        if self._failure is None:
            self._failure = description
        self._state = AsyncState.DEFAULT
        self._kill_workers()
        self.closed = True
        _LIVE_ENVS.discard(self)
        if reraise is not None:
            raise reraise
        raise WorkerError(
            f"{description}. All workers were killed and this vector env cannot be used any more; create a new "
            f"one (episodes already returned to you are unaffected).{hint}"
        ) from cause

    def _dead_description(self, i: int) -> str:
        p = self.processes[i]
        p.join(0.5)  # a worker killed a moment ago may not be reaped yet
        code = p.exitcode
        if code is None:
            return f"worker {i} (pid {p.pid}) closed its pipe"
        if code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:
                sig = f"signal {-code}"
            hint = " (often the out-of-memory killer)" if -code == signal.SIGKILL else ""
            return f"worker {i} (pid {p.pid}) died, killed by {sig}{hint}"
        return f"worker {i} (pid {p.pid}) died with exit code {code}"

    def _describe_dead(self) -> str:
        dead = [self._dead_description(i) for i, p in enumerate(self.processes) if p.exitcode is not None]
        return ", ".join(dead)

    def _proc_state(self, i: int) -> str:
        p = self.processes[i]
        state = _linux_proc_state(p.pid) if p.pid is not None else None
        names = {"T": "stopped, e.g. by SIGSTOP", "t": "stopped by a debugger", "D": "in uninterruptible I/O",
                 "Z": "exited", "R": "running", "S": "sleeping"}
        return f"pid {p.pid}, {names.get(state, 'state unknown') if state else 'state unknown'}"


class _NoAnswer(Exception):
    def __init__(self, indices: list[int]) -> None:
        super().__init__(indices)
        self.indices = indices


def _signal(p: mp.process.BaseProcess, sig: int) -> None:
    try:
        os.kill(p.pid, sig)  # type: ignore[arg-type]
    except (ProcessLookupError, PermissionError):
        pass


def _linux_proc_state(pid: int) -> str | None:
    """One-letter state of ``pid`` from /proc (R, S, D, T, Z, ...), or None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


# ---------------------------------------------------------------------- worker side
def _watch_parent(parent_pid: int) -> None:
    """Exit this worker when the process that created the vector env is gone."""
    if sys.platform.startswith("linux") and os.getppid() != parent_pid:
        # Our parent is the fork server. It exits once the creating process and every holder of its "alive"
        # pipe are gone; each forked child inherits that pipe, so we drop our copy (a worker starts no
        # processes of its own). The kernel's SIGKILL on the fork server's exit then also reaches a worker
        # that is stopped, which no thread of its own could act on.
        try:
            from multiprocessing import forkserver

            alive_fd = forkserver._forkserver._forkserver_alive_fd
            if alive_fd is not None:
                os.close(alive_fd)
                forkserver._forkserver._forkserver_alive_fd = None
        except (AttributeError, OSError):
            pass
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    try:
        fd: int | None = os.pidfd_open(parent_pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has exited
        else:
            while _alive(parent_pid):
                time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if not _alive(parent_pid):
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _linux_proc_state(pid) != "Z"


def _error_reply(e: BaseException) -> tuple[tuple[Any, str, str, str], bool]:
    etype: Any = type(e)
    try:
        pickle.loads(pickle.dumps(etype))
    except Exception:  # noqa: BLE001 - the parent gets the name instead
        etype = None
    return (etype, type(e).__name__, str(e), traceback.format_exc()), False


def _worker(
    index: int,
    env_fn: Callable[[], gym.Env],
    pipe: Any,
    parent_pipe: Any,
    shared_memory: Any,
    error_queue: Any,
    autoreset_mode: AutoresetMode,
    semaphore: Any,
    *,
    parent_pid: int,
) -> None:
    """Worker loop: gymnasium's protocol, but an exception of the env is sent back and the loop goes on."""
    parent_pipe.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then stops us
    _watch_parent(parent_pid)
    env = None
    try:
        env = env_fn()
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
        pipe.recv()  # the parent's first command
        pipe.send(_error_reply(e))
        return
    observation_space, action_space = env.observation_space, env.action_space
    autoreset = False
    observation = None
    try:
        while True:
            try:
                command, data = pipe.recv()
            except (EOFError, OSError):  # the parent closed the pipe
                break
            permit = semaphore is not None and command in ("reset", "step")
            if permit:
                semaphore.acquire()
            try:
                if command == "reset":
                    observation, info = env.reset(**data)
                    autoreset = False
                    if shared_memory:
                        write_to_shared_memory(observation_space, index, observation, shared_memory)
                        observation = None
                    reply: Any = (observation, info)
                elif command == "reset-noop":
                    reply = (observation, {})
                elif command == "step":
                    if autoreset_mode == AutoresetMode.NEXT_STEP and autoreset:
                        observation, info = env.reset()
                        reward, terminated, truncated = 0.0, False, False
                    else:
                        observation, reward, terminated, truncated, info = env.step(data)
                        if autoreset_mode == AutoresetMode.SAME_STEP and (terminated or truncated):
                            final_obs, final_info = observation, info
                            observation, reset_info = env.reset()
                            info = {"final_info": final_info, "final_obs": final_obs, **reset_info}
                    if autoreset_mode == AutoresetMode.NEXT_STEP:
                        autoreset = bool(terminated or truncated)
                    if shared_memory:
                        write_to_shared_memory(observation_space, index, observation, shared_memory)
                        observation = None
                    reply = (observation, reward, terminated, truncated, info)
                elif command == "close":
                    pipe.send((None, True))
                    break
                elif command == "_call":
                    name, args, kwargs = data
                    if name in ("reset", "step", "close", "_setattr", "_check_spaces"):
                        raise ValueError(f"call({name!r}) is not allowed: use {name}() directly.")
                    attr = env.get_wrapper_attr(name)
                    reply = attr(*args, **kwargs) if callable(attr) else attr
                elif command == "_setattr":
                    name, value = data
                    env.set_wrapper_attr(name, value)
                    reply = None
                elif command == "_check_spaces":
                    obs_mode, single_obs_space, single_action_space = data
                    reply = (
                        single_obs_space == observation_space
                        if obs_mode == "same"
                        else is_space_dtype_shape_equiv(single_obs_space, observation_space),
                        single_action_space == action_space,
                    )
                else:
                    raise RuntimeError(f"unknown command {command!r}")
            except Exception as e:  # noqa: BLE001 - the env's error goes to the caller; we keep serving
                reply_msg: Any = _error_reply(e)
            else:
                reply_msg = (reply, True)
            finally:
                if permit:
                    semaphore.release()
            pipe.send(reply_msg)
    finally:
        try:
            env.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


# ---------------------------------------------------------------------- entry point
def make_vec(
    num_envs: int = 1,
    *,
    vectorization: str = "async",
    timeout: float | None = DEFAULT_TIMEOUT_S,
    context: str | None = "forkserver",
    autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    max_episode_steps: int | None = None,
    ray_address: str | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """Vector entry point of the registered ids (``gym.make_vec("LiberoObject-Task4-v0", num_envs=8)``).

    Args:
        num_envs: Number of sub-environments.
        vectorization: ``"async"`` (one process per env, :class:`LiberoAsyncVectorEnv`), ``"sync"``, or
            ``"ray"`` (one Ray actor per env, anywhere on a Ray cluster: :class:`libero_gym.RayVectorEnv`,
            needs the ``ray`` extra).
        timeout: Async and Ray: seconds to wait for workers before raising :class:`WorkerError`.
        context: Async only: multiprocessing start method (``"forkserver"``, ``"spawn"``; ``"fork"`` is only
            safe if the parent never rendered).
        autoreset_mode: Gymnasium autoreset mode, declared in ``envs.metadata["autoreset_mode"]``.
        max_episode_steps: Step limit of each sub-env (``TimeLimit``).
        ray_address: Ray only: the cluster to join if Ray is not running yet (``"auto"``,
            ``"ray://head:10001"``); None starts a local Ray.
        ray_actor_options: Ray only: options of each sub-env's actor (default one CPU each).
        **env_kwargs: Passed to :class:`libero_gym.LiberoObjectEnv` (``task``, ``obs_mode``, ...).
    """
    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r} is not accepted: give an int >= 1.")
    if vectorization not in ("async", "sync", "ray"):
        raise ValueError(f"vectorization={vectorization!r} is not accepted: choose 'async', 'sync' or 'ray'.")
    env_fn = _EnvFactory(max_episode_steps, env_kwargs)
    # Build one env in the caller to validate arguments early (no simulator is started).
    env_fn().close()
    if vectorization == "sync":
        return SyncVectorEnv([env_fn] * num_envs, autoreset_mode=autoreset_mode)
    if vectorization == "ray":
        from libero_gym.ray_vector import RayVectorEnv

        return RayVectorEnv([env_fn] * num_envs, address=ray_address, timeout=timeout, autoreset_mode=autoreset_mode,
                            actor_options=ray_actor_options)
    return LiberoAsyncVectorEnv([env_fn] * num_envs, timeout=timeout, context=context, autoreset_mode=autoreset_mode)


class _EnvFactory:
    """Picklable env constructor for async workers."""

    def __init__(self, max_episode_steps: int | None, env_kwargs: dict[str, Any]) -> None:
        self.max_episode_steps = max_episode_steps
        self.env_kwargs = env_kwargs

    def __call__(self) -> gym.Env:
        from libero_gym.env import LiberoObjectEnv

        env: gym.Env = LiberoObjectEnv(max_episode_steps=self.max_episode_steps, **self.env_kwargs)
        if self.max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, self.max_episode_steps)
        return env
