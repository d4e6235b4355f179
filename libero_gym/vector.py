"""Vector environments for LIBERO-Object: an async vector env that is safe with EGL and never hangs."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

__all__ = ["LiberoAsyncVectorEnv", "WorkerError", "make_vec"]

DEFAULT_TIMEOUT_S = 300.0
"""Seconds an async call may take before the vector env gives up on a worker (first resets build the
simulator, which takes a few seconds per env on a loaded CPU)."""


class WorkerError(RuntimeError):
    """A sub-environment worker crashed, died or did not answer in time."""


class LiberoAsyncVectorEnv(AsyncVectorEnv):
    """:class:`gymnasium.vector.AsyncVectorEnv` with a bounded wait and a clear error for dead workers.

    Every ``reset``/``step``/``call`` waits at most ``timeout`` seconds; a worker that died (segfault,
    OOM kill) or hung raises :class:`WorkerError` naming the worker, instead of blocking the caller
    forever. The default start method is ``"forkserver"``: each worker starts from a clean process, so no
    EGL/OpenGL context is ever inherited across ``fork``. Scripts that create it need an
    ``if __name__ == "__main__":`` guard.

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
        **kwargs: Any,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout={timeout!r} is not accepted: give seconds > 0, or None to wait forever.")
        self.timeout = timeout
        super().__init__(env_fns, context=context, **kwargs)

    def _dead_workers(self) -> list[str]:
        dead = []
        for i, p in enumerate(self.processes):
            p.join(timeout=0.5)  # a worker killed a moment ago may not be reaped yet
            if p.exitcode is not None:
                hint = " (SIGKILL: often the out-of-memory killer)" if p.exitcode == -9 else ""
                dead.append(f"worker {i} (exit code {p.exitcode}{hint})")
        return dead

    def _guard(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (mp.TimeoutError, EOFError, BrokenPipeError, ConnectionResetError) as e:
            dead = self._dead_workers()
            self.close(terminate=True)
            if dead:
                raise WorkerError(
                    f"{what} failed: {', '.join(dead)} died. The vector env was closed; create a new one "
                    "(episodes already returned to you are unaffected)."
                ) from e
            raise WorkerError(
                f"{what} did not finish within timeout={self.timeout}s: a worker is hung. The vector env was "
                "closed; create a new one, or pass a larger `timeout`."
            ) from e

    def reset(self, *, seed=None, options=None):  # noqa: D102
        def run():
            self.reset_async(seed=seed, options=options)
            return self.reset_wait(timeout=self.timeout)

        return self._guard("reset()", run)

    def step(self, actions):  # noqa: D102
        def run():
            self.step_async(actions)
            return self.step_wait(timeout=self.timeout)

        return self._guard("step()", run)

    def call(self, name: str, *args: Any, **kwargs: Any):  # noqa: D102
        def run():
            self.call_async(name, *args, **kwargs)
            return self.call_wait(timeout=self.timeout)

        return self._guard(f"call({name!r})", run)


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
