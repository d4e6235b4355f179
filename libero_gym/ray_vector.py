"""A vector env whose sub-environments are Ray actors: the same env API on one machine or a whole cluster.

Ray (``pip install "libero-tgrpo[ray]"``) is imported only when a :class:`RayVectorEnv` is created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ClosedEnvironmentError
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from libero_gym.vector import DEFAULT_TIMEOUT_S, WorkerError

__all__ = ["RayVectorEnv", "DEFAULT_ACTOR_OPTIONS"]

logger = logging.getLogger(__name__)

DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 1}
"""Ray options of each sub-env actor unless ``actor_options`` says otherwise: one CPU each (a LIBERO env
steps on one core), no restarts (a restarted actor would silently lose its episode)."""

START_TIMEOUT_S = 120.0
"""Seconds the actors may take to start (a worker process each, perhaps on a node that is still starting)
when ``timeout`` is shorter."""

CLOSE_TIMEOUT_S = 10.0
"""Seconds :meth:`RayVectorEnv.close` waits for the sub-envs to close before killing their actors."""


class _EnvWorker:
    """Holds one sub-environment inside a Ray actor; autoresets as Gymnasium's async worker does."""

    def __init__(self, env_fn: Callable[[], gym.Env], autoreset_mode: AutoresetMode) -> None:
        self.env = env_fn()
        self.autoreset_mode = autoreset_mode
        self.autoreset = False

    def ready(self) -> tuple[int, str, str]:
        import os
        import socket

        import ray

        return os.getpid(), socket.gethostname(), ray.get_runtime_context().get_actor_id()

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.env.observation_space, self.env.action_space

    def reset(self, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.autoreset = False
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        env = self.env
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            if self.autoreset:
                observation, info = env.reset()
                reward, terminated, truncated = 0, False, False
            else:
                observation, reward, terminated, truncated, info = env.step(action)
            self.autoreset = terminated or truncated
        elif self.autoreset_mode == AutoresetMode.SAME_STEP:
            observation, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                reset_observation, reset_info = env.reset()
                info = {"final_info": info, "final_obs": observation, **reset_info}
                observation = reset_observation
        else:
            observation, reward, terminated, truncated, info = env.step(action)
        return observation, reward, terminated, truncated, info

    def call(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        if name in ("reset", "step", "close", "_setattr", "_check_spaces"):
            raise ValueError(f"Trying to call function `{name}` with `call`, use `{name}` directly instead.")
        attr = self.env.get_wrapper_attr(name)
        return attr(*args, **kwargs) if callable(attr) else attr

    def set_attr(self, name: str, value: Any) -> None:
        self.env.set_wrapper_attr(name, value)

    def close(self) -> None:
        self.env.close()


class RayVectorEnv(VectorEnv):
    """A :class:`gymnasium.vector.VectorEnv` whose sub-environments run in Ray actors.

    It behaves as :class:`libero_gym.LiberoAsyncVectorEnv`: same batched spaces, autoreset modes
    (``envs.metadata["autoreset_mode"]``), ``info`` dicts, ``reset`` seeds and options (``reset_mask``
    included), ``call``/``get_attr``/``set_attr`` (e.g. ``set_attr("next_init_state", [...])``), errors
    raised by a sub-env re-raised with their type and message, and :class:`WorkerError` when an actor dies
    or does not answer within ``timeout``. Ray places the actors: on one machine with a local Ray, or on
    any node of a cluster (``address="auto"`` or ``"ray://head:10001"``).

    Ray is started here if it is not running yet (``ray.init(address=address)``); a running Ray is used
    as it is. Actors are killed by :meth:`close`; Ray itself keeps running.

    Args:
        env_fns: Functions that create the sub-environments (they must be picklable by Ray).
        address: Ray cluster to join when Ray is not running yet (``None`` starts a local one).
        timeout: Seconds any call may take before :class:`WorkerError`; None waits forever.
        autoreset_mode: Gymnasium autoreset mode.
        actor_options: Ray actor options, merged over :data:`DEFAULT_ACTOR_OPTIONS` (``num_cpus``,
            ``resources``, ``runtime_env``, ``scheduling_strategy``, ...).
        copy: Return copies of the batched observations (as ``AsyncVectorEnv``).

    Example:
        >>> import gymnasium as gym, libero_gym  # doctest: +SKIP
        >>> envs = gym.make_vec("LiberoObject-Task4-v0", num_envs=16, vectorization="ray",  # doctest: +SKIP
        ...                     ray_address="auto")
        >>> obs, info = envs.reset(seed=0)  # doctest: +SKIP
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        *,
        address: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        actor_options: dict[str, Any] | None = None,
        copy: bool = True,
    ) -> None:
        if len(env_fns) < 1:
            raise ValueError("env_fns is empty: give at least one function that creates an env.")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout={timeout!r} is not accepted: give seconds > 0, or None to wait forever.")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise ValueError(f"actor_options={actor_options!r} is not accepted: give a dict of Ray actor options.")
        try:
            import ray
        except ImportError as e:
            raise ImportError(
                "RayVectorEnv needs Ray: pip install 'libero-tgrpo[ray]' (or pip install ray)."
            ) from e
        self._ray = ray
        self.timeout = timeout
        self.copy = copy
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.num_envs = len(env_fns)

        # Spaces and metadata from one env built here (libero_gym starts no simulator before reset).
        dummy = env_fns[0]()
        self.metadata = dict(dummy.metadata)
        self.metadata["autoreset_mode"] = self.autoreset_mode
        self.render_mode = dummy.render_mode
        self.single_observation_space = dummy.observation_space
        self.single_action_space = dummy.action_space
        dummy.close()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._observations = create_empty_array(self.single_observation_space, n=self.num_envs, fn=np.zeros)

        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        options = {**DEFAULT_ACTOR_OPTIONS, "max_restarts": 0, **(actor_options or {})}
        self._resources = ", ".join(
            f"{k}={options[k]}" for k in ("num_cpus", "num_gpus", "memory", "resources") if k in options
        )
        actor_cls = ray.remote(_EnvWorker).options(**options)
        self.actors = [actor_cls.remote(fn, self.autoreset_mode) for fn in env_fns]
        self.actor_hosts: list[tuple[int, str, str] | None] = [None] * self.num_envs
        """(pid, hostname, Ray actor id) of each actor, known once it started."""
        try:
            self.actor_hosts = list(
                self._get("starting the actors", [a.ready.remote() for a in self.actors], START_TIMEOUT_S)
            )
            spaces = self._get("spaces()", [a.spaces.remote() for a in self.actors])
        except BaseException:
            self.close(terminate=True)
            raise
        for i, (obs_space, act_space) in enumerate(spaces):
            if obs_space != self.single_observation_space or act_space != self.single_action_space:
                self.close(terminate=True)
                raise RuntimeError(
                    f"Sub-env {i} has observation space {obs_space} and action space {act_space}; sub-env 0 has "
                    f"{self.single_observation_space} and {self.single_action_space}: all must be equal."
                )

    # ------------------------------------------------------------------ plumbing
    def _describe(self, i: int) -> str:
        host = self.actor_hosts[i]
        if host is None:
            return f"actor {i} (not started)"
        pid, hostname, actor_id = host
        return f"actor {i} (Ray actor {actor_id[:12]}, pid {pid} on {hostname})"

    def _get(self, what: str, refs: list, at_least: float | None = None) -> list:
        """``ray.get`` of one ref per actor with the timeout; Ray failures become :class:`WorkerError`."""
        ray = self._ray
        exc = ray.exceptions
        timeout = self.timeout if self.timeout is None or at_least is None else max(self.timeout, at_least)
        try:
            return ray.get(refs, timeout=timeout)
        except exc.RayTaskError as e:
            # A sub-env raised: re-raise its exception, as AsyncVectorEnv does (after collecting the other
            # results, so that Ray does not report them as unhandled).
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=1.0)
            for ref in ready:
                try:
                    ray.get(ref, timeout=0)
                except Exception:  # noqa: S110 - the first error is raised below
                    pass
            cause = e.cause if isinstance(e.cause, BaseException) else RuntimeError(str(e))
            raise cause from None
        except exc.GetTimeoutError as e:
            dead = self._dead_actors(refs)
            self.close(terminate=True)
            if dead:
                raise WorkerError(f"{what} failed: {', '.join(dead)} died. {_CLOSED}") from e
            raise WorkerError(
                f"{what} did not finish within timeout={timeout}s: an actor is hung, or waits for resources "
                f"the cluster does not have (each actor asks for {self._resources}). {_CLOSED} Or pass a larger "
                "`timeout`."
            ) from e
        except (exc.RayActorError, exc.ObjectLostError) as e:
            dead = self._dead_actors(refs) or ["an actor"]
            self.close(terminate=True)
            raise WorkerError(f"{what} failed: {', '.join(dead)} died ({type(e).__name__}). {_CLOSED}") from e

    def _dead_actors(self, refs: list) -> list[str]:
        ray = self._ray
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5)
        dead = []
        for i, ref in enumerate(refs):
            if ref not in ready:
                continue
            try:
                ray.get(ref, timeout=0)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
                dead.append(self._describe(i))
            except Exception:
                pass
        return dead

    def _assert_is_running(self) -> None:
        if self.closed:
            raise ClosedEnvironmentError(f"Trying to operate on `{type(self).__name__}`, after a call to `close()`.")

    # ------------------------------------------------------------------ VectorEnv API
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the sub-envs (all, or those in ``options["reset_mask"]``); sub-env i gets ``seed + i``."""
        self._assert_is_running()
        if seed is None:
            seed = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seed = [int(seed) + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(
                f"If seeds are passed as a list the length must match num_envs={self.num_envs} but got "
                f"length={len(seed)}."
            )
        options = dict(options) if options is not None else None
        mask = np.ones(self.num_envs, dtype=bool)
        if options is not None and "reset_mask" in options:
            mask = options.pop("reset_mask")
            if not isinstance(mask, np.ndarray) or mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask']={mask!r} is not accepted: give a numpy bool array of shape "
                    f"({self.num_envs},)."
                )
            if not mask.any():
                raise ValueError(f"options['reset_mask']={mask!r} resets no sub-env: set at least one True.")
        idx = [i for i in range(self.num_envs) if mask[i]]
        refs = [self.actors[i].reset.remote({"seed": seed[i], "options": options}) for i in idx]
        results = self._get("reset()", refs)
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            if mask[i]:
                obs, info = results[idx.index(i)]
                _set_row(self.single_observation_space, self._observations, i, obs)
                infos = self._add_info(infos, info, i)
            else:
                infos = self._add_info(infos, {}, i)
        return (deepcopy(self._observations) if self.copy else self._observations), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-env with its action (autoreset as ``metadata["autoreset_mode"]`` says)."""
        self._assert_is_running()
        refs = [a.step.remote(act) for a, act in zip(self.actors, iterate(self.action_space, actions), strict=True)]
        results = self._get("step()", refs)
        observations, rewards, terminations, truncations = [], [], [], []
        infos: dict[str, Any] = {}
        for i, (obs, reward, terminated, truncated, info) in enumerate(results):
            observations.append(obs)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            infos = self._add_info(infos, info, i)
        self._observations = concatenate(self.single_observation_space, observations, self._observations)
        return (
            deepcopy(self._observations) if self.copy else self._observations,
            np.array(rewards, dtype=np.float64),
            np.array(terminations, dtype=np.bool_),
            np.array(truncations, dtype=np.bool_),
            infos,
        )

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call a method (or read an attribute) of every sub-env; returns one result per sub-env."""
        self._assert_is_running()
        return tuple(self._get(f"call({name!r})", [a.call.remote(name, args, kwargs) for a in self.actors]))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """An attribute of every sub-env."""
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | object) -> None:
        """Set an attribute of the sub-envs: one value each (list/tuple of ``num_envs``) or the same for all."""
        self._assert_is_running()
        if not isinstance(values, (list, tuple)):
            values = [values for _ in range(self.num_envs)]
        if len(values) != self.num_envs:
            raise ValueError(
                "Values must be a list or tuple with length equal to the number of environments. "
                f"Got `{len(values)}` values for {self.num_envs} environments."
            )
        self._get(f"set_attr({name!r})", [a.set_attr.remote(name, v) for a, v in zip(self.actors, values, strict=True)])

    def render(self) -> tuple[Any, ...] | None:
        """The rendered frame of every sub-env."""
        return self.call("render")

    def close_extras(self, timeout: float | None = CLOSE_TIMEOUT_S, terminate: bool = False, **kwargs: Any) -> None:
        """Close the sub-envs (unless ``terminate``) and kill their actors."""
        ray = self._ray
        actors, self.actors = getattr(self, "actors", []), []
        if not terminate and actors:
            try:
                ray.get([a.close.remote() for a in actors], timeout=timeout)
            except Exception as e:  # a dead or hung actor is killed below anyway
                logger.warning("closing the sub-envs failed (%s); killing their actors", type(e).__name__)
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: S110 - already dead
                pass

    def __del__(self) -> None:
        if not getattr(self, "closed", True) and hasattr(self, "actors"):
            try:
                self.close(terminate=True)
            except Exception:  # noqa: S110 - interpreter teardown
                pass


_CLOSED = "The vector env was closed; create a new one (episodes already returned to you are unaffected)."


def _set_row(space: gym.Space, batch: Any, index: int, value: Any) -> None:
    """Write one sub-env's observation ``value`` into row ``index`` of the batched ``batch`` (in place)."""
    if isinstance(space, gym.spaces.Dict):
        for key, sub in space.spaces.items():
            _set_row(sub, batch[key], index, value[key])
    elif isinstance(space, gym.spaces.Tuple):
        for sub, b, v in zip(space.spaces, batch, value, strict=True):
            _set_row(sub, b, index, v)
    else:
        batch[index] = value
