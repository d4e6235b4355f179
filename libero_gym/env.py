"""LIBERO-Object tasks as a Gymnasium environment."""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import weakref
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from libero_gym.arm_start import apply_arm_start_noise, check_robot_init_noise
from libero_gym.placement import TERMINATION_KEYS, PlacementConfig, basket_motion, is_disturbed
from libero_gym.tasks import NUM_INIT_STATES, ObjectTask, get_task

__all__ = ["LiberoObjectEnv", "OBS_MODES", "STATE_LAYOUT", "STATE_DIM", "WARMUP_ACTION"]

logger = logging.getLogger(__name__)

OBS_MODES = ("state", "rgb", "rgb_state")
"""Accepted values of ``obs_mode``."""

STATE_LAYOUT: dict[str, slice] = {
    "eef_pos": slice(0, 3),
    "eef_quat": slice(3, 7),
    "gripper_qpos": slice(7, 9),
    "target_pos": slice(9, 12),
    "target_quat": slice(12, 16),
    "basket_pos": slice(16, 19),
    "basket_quat": slice(19, 23),
    "target_minus_eef": slice(23, 26),
    "basket_minus_target": slice(26, 29),
}
"""Layout of the ``"state"`` observation vector (positions in metres, quaternions ``w, x, y, z``)."""

STATE_DIM = 29
"""Length of the ``"state"`` observation vector."""

WARMUP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
"""Action repeated during the warm-up steps after a reset (stand still, gripper open)."""

CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
"""Observation key -> MuJoCo camera name."""

OUT_OF_RANGE_MODES = ("clip", "raise")

RELEASE_ACTION = WARMUP_ACTION
"""Action of the release check: hold the arm still and open the gripper."""


def _parse_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        h = w = int(image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        h, w = (int(v) for v in image_size)
    else:
        raise ValueError(f"image_size={image_size!r} is not accepted: give an int or a (height, width) pair.")
    if not (16 <= h <= 2048 and 16 <= w <= 2048):
        raise ValueError(f"image_size={image_size!r} is out of range: each side must be in [16, 2048] pixels.")
    return h, w


_OPEN_ENVS: weakref.WeakSet = weakref.WeakSet()


def _close_open_envs() -> None:
    # Free GL contexts while EGL is still loaded; freeing them during interpreter teardown fails noisily.
    for env in list(_OPEN_ENVS):
        with contextlib.suppress(Exception):
            env.close()


def _close_open_envs_first_at_exit() -> None:
    """(Re-)register :func:`_close_open_envs` so that it runs before every exit handler registered so far.

    MuJoCo's EGL backend registers ``eglTerminate`` when the first GL context is made; exit handlers run
    last-registered first, so ours must be registered again after it, or the contexts of envs that were
    never closed are freed after EGL is gone, each with an ``eglDestroyContext`` traceback.
    """
    atexit.unregister(_close_open_envs)
    atexit.register(_close_open_envs)


atexit.register(_close_open_envs)


def _no_reward(action=None) -> float:
    return 0.0


def _skip_redundant_forward(controller) -> None:
    """Make the arm controller reuse the kinematics robosuite computed just before it runs.

    robosuite's step calls ``mj_forward`` before each control substep, and the controller's ``update``
    calls it again on the unchanged state. ``mj_forward`` is deterministic, so skipping the second call
    leaves the dynamics bit-for-bit unchanged (tested against raw LIBERO) and saves a third of the
    forward passes.
    """
    if getattr(controller, "_libero_gym_patched", False):
        return
    sim = controller.sim
    original = type(controller).update

    def update(force: bool = False) -> None:
        forward = sim.forward
        sim.forward = _noop
        try:
            original(controller, force)
        finally:
            sim.forward = forward

    controller.update = update
    controller._libero_gym_patched = True


def _noop() -> None:
    return None


def _control_step(sim_env):
    """The function that runs one env step of the robosuite env: :mod:`libero_gym.controller`'s loop where
    it reproduces robosuite's exactly, else robosuite's own step with the redundant forward pass skipped."""
    from libero_gym.controller import FastControlLoop, supports

    if supports(sim_env):
        return FastControlLoop(sim_env).step
    _skip_redundant_forward(sim_env.robots[0].controller)
    return sim_env.step


class LiberoObjectEnv(gym.Env):
    """A LIBERO-Object pick-and-place task ("pick up the X and place it in the basket").

    **Task description.** A Franka Panda arm on a floor scene with a basket and six grocery objects must put
    the target object named in the instruction into the basket. Actions are 7-dim: a delta end-effector
    pose (x, y, z, roll, pitch, yaw) for robosuite's OSC_POSE controller, each in [-1, 1] (1 = 5 cm or
    0.5 rad per step), and the gripper command (-1 open, +1 close). Control runs at 20 Hz.

    **Randomizations.** Without options, ``reset`` draws a fresh placement of all objects from LIBERO's own
    placement samplers, seeded from the env's RNG (``reset(seed=...)``): this is the training
    distribution. ``reset(options={"init_state": k})`` restores LIBERO's fixed benchmark state ``k``
    (0-49), the evaluation set; ``reset(options={"placement_seed": s})`` draws the placement from seed
    ``s``, so sub-envs of a vector env reset with the same options share one placement. Each reset is
    followed by ``warmup_steps`` steps of :data:`WARMUP_ACTION` while the objects settle.

    **Success conditions.** ``info["is_success"]`` is LIBERO's own predicate, unchanged (the target's
    centre inside the basket's containment region), so that results compare with published LIBERO
    numbers. It also holds while the gripper still clamps the object and when the basket was knocked
    over, so ``info`` adds ``is_placed``: LIBERO's success, the basket not disturbed and no finger touching
    the target (thresholds in :class:`libero_gym.placement.PlacementConfig`). ``terminate_on`` chooses
    which of the two ends an episode (LIBERO's success by default); time limits are Gymnasium's
    ``TimeLimit`` (280 steps for registered ids). With ``release_check=True`` the step that ends an
    episode then opens the gripper and holds the arm still for ``release_steps`` steps and reports in
    ``info["placed_after_release"]`` whether the object is still placed afterwards (the strict success of
    an evaluation). The reward is LIBERO's sparse reward (1.0 on success); shaped rewards are wrappers in
    the ``rewards`` package, built on the facts in ``info`` (``docs/info_contract.md``).

    Args:
        task: Paper task number 1-10 or the instruction text.
        obs_mode: ``"state"`` (no rendering), ``"rgb"`` (agentview and wrist images) or ``"rgb_state"``.
        image_size: Camera image size, an int or ``(height, width)``.
        render_mode: ``"rgb_array"`` or ``None``. ``render()`` returns the agentview frame.
        render_size: Size of the frames returned by ``render()``.
        warmup_steps: Number of warm-up steps after each reset (peers use 10).
        msaa: Keep MuJoCo's multi-sample anti-aliasing. Off by default: it costs ~40% of render time on a
            software rasteriser and changes the images little (see ``benchmarks/results``).
        action_out_of_range: ``"clip"`` (default) clips actions to [-1, 1]; ``"raise"`` rejects them.
        max_episode_steps: Optional step limit enforced by the env itself: it truncates the episode there
            and refuses further steps until ``reset``. ``gym.make`` applies the registered limit (280) with
            Gymnasium's ``TimeLimit`` wrapper instead, which truncates but does not refuse further steps;
            ``gym.make_vec`` sets both.
        terminate_on: The boolean ``info`` fact that ends an episode: ``"is_success"`` (LIBERO's
            predicate, default) or ``"is_placed"`` (the object released in an undisturbed basket), so that
            an episode can go on past LIBERO's success until the object is let go.
        placement: Thresholds of the placement facts and of the release check (default
            :class:`~libero_gym.placement.PlacementConfig`).
        release_check: Run the release check at the step that ends an episode (terminated, not truncated)
            and report its outcome in ``info["placed_after_release"]``.
        robot_init_noise: Noise (rad) on a drawn placement's arm start, 0 by default (:mod:`libero_gym.arm_start`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: int | str = 1,
        obs_mode: str = "state",
        image_size: int | tuple[int, int] = 128,
        render_mode: str | None = None,
        render_size: int | tuple[int, int] = 256,
        warmup_steps: int = 10,
        msaa: bool = False,
        action_out_of_range: str = "clip",
        max_episode_steps: int | None = None,
        terminate_on: str = "is_success",
        placement: PlacementConfig | None = None,
        release_check: bool = False,
        robot_init_noise: float = 0.0,
    ) -> None:
        self.task: ObjectTask = get_task(task)
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode={obs_mode!r} is not accepted: choose one of {OBS_MODES}.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r} is not accepted: choose one of "
                f"{self.metadata['render_modes']} or None."
            )
        if not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps!r} is not accepted: give an int >= 0.")
        if action_out_of_range not in OUT_OF_RANGE_MODES:
            raise ValueError(
                f"action_out_of_range={action_out_of_range!r} is not accepted: choose one of "
                f"{OUT_OF_RANGE_MODES}."
            )
        if terminate_on not in TERMINATION_KEYS:
            raise ValueError(f"terminate_on={terminate_on!r} is not accepted: choose one of {TERMINATION_KEYS}.")
        if placement is not None and not isinstance(placement, PlacementConfig):
            raise ValueError(
                f"placement={placement!r} is not accepted: give a libero_gym.placement.PlacementConfig or None."
            )
        if not isinstance(release_check, (bool, np.bool_)):
            raise ValueError(f"release_check={release_check!r} is not accepted: give True or False.")
        self.robot_init_noise = check_robot_init_noise(robot_init_noise)
        self.terminate_on = terminate_on
        self.placement = placement or PlacementConfig()
        self.release_check = bool(release_check)
        self.obs_mode = obs_mode
        self.image_size = _parse_size(image_size)
        self.render_mode = render_mode
        self.render_size = _parse_size(render_size)
        self.warmup_steps = int(warmup_steps)
        self.msaa = bool(msaa)
        self.action_out_of_range = action_out_of_range
        self.max_episode_steps = max_episode_steps

        obs_spaces: dict[str, spaces.Space] = {}
        if obs_mode in ("rgb", "rgb_state"):
            h, w = self.image_size
            for key in CAMERAS:
                obs_spaces[key] = spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
        if obs_mode in ("state", "rgb_state"):
            obs_spaces["state"] = spaces.Box(-np.inf, np.inf, (STATE_DIM,), dtype=np.float32)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, (7,), dtype=np.float32)

        # The simulator is created lazily on the first reset, so that spaces can be read (and vector envs
        # built) without starting MuJoCo or a GL context in the calling process.
        self._libero = None
        self._sim_env = None
        self._renderers: dict[tuple[int, int], tuple[Any, Any]] = {}
        self._init_states: np.ndarray | None = None
        self._elapsed_steps = 0
        self._needs_reset = True
        self._target_start_z = 0.0
        self._basket_start: tuple[np.ndarray, np.ndarray] | None = None
        self._gripper_command = float(WARMUP_ACTION[-1])
        self._contact_ids_model = None
        _OPEN_ENVS.add(self)
        self.next_init_state: int | None = None
        """Benchmark state used by the next reset when no ``init_state`` option is given, then cleared.

        Set it per sub-env of a vector env with ``envs.set_attr("next_init_state", [k0, k1, ...])``.
        """
        self.next_placement_seed: int | None = None
        """Placement seed used by the next reset when neither ``init_state`` nor ``placement_seed`` is given (and
        no ``next_init_state`` is set), then cleared: a vector env's autoresets can be sent to chosen training
        placements with ``envs.set_attr("next_placement_seed", [s0, s1, ...])``.
        """

    # ------------------------------------------------------------------ properties
    @property
    def instruction(self) -> str:
        """The task's language instruction."""
        return self.task.instruction

    @property
    def task_id(self) -> int:
        """Paper task number 1-10."""
        return self.task.task_id

    @property
    def init_states(self) -> np.ndarray:
        """The task's 50 benchmark initial states, shape (50, state_size)."""
        if self._init_states is None:
            with contextlib.redirect_stdout(io.StringIO()):
                from libero.libero import benchmark

                suite = benchmark.get_benchmark_dict()["libero_object"]()
                self._init_states = np.asarray(suite.get_task_init_states(self.task.libero_index))
        return self._init_states

    # ------------------------------------------------------------------ simulator
    def _make_sim(self) -> None:
        from libero_gym.model_cache import use_model_cache

        with contextlib.redirect_stdout(io.StringIO()), use_model_cache():
            from libero.libero import benchmark, get_libero_path
            from libero.libero.envs.env_wrapper import ControlEnv

            suite = benchmark.get_benchmark_dict()["libero_object"]()
            t = suite.get_task(self.task.libero_index)
            bddl = os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file)
            self._libero = ControlEnv(
                bddl_file_name=bddl,
                has_renderer=False,
                has_offscreen_renderer=False,
                use_camera_obs=False,
                ignore_done=True,
                hard_reset=False,
                control_freq=20,
            )
        env = self._libero.env
        self._sim_env = env
        # We read the state straight from the simulator: drop robosuite's observables, which it would
        # otherwise update on every physics substep (safe with hard_reset=False, which never rebuilds them).
        env._observables = {}
        self._target_name, self._basket_name = env.obj_of_interest[0], env.obj_of_interest[1]
        if self._target_name != self.task.target_body:
            raise RuntimeError(
                f"LIBERO task {self.task.libero_index} has target {self._target_name!r}, "
                f"expected {self.task.target_body!r}."
            )
        # robosuite's reward() re-evaluates the success predicate every step; LIBERO's step evaluates it
        # again for `done`, which is the one we use.
        env.reward = _no_reward
        goal = env.parsed_problem["goal_state"][0]
        self._contain_region = goal[2]
        self._robot = env.robots[0]

    def _ids(self) -> None:
        env = self._sim_env
        self._target_bid = env.obj_body_id[self._target_name]
        self._basket_bid = env.obj_body_id[self._basket_name]
        self._eef_sid = self._robot.eef_site_id
        self._finger_q = list(self._robot._ref_gripper_joint_pos_indexes)
        if self._contact_ids_model is not self._model:
            self._contact_ids()

    def _contact_ids(self) -> None:
        """Geom ids of each finger (finger and pad collision geoms) and of the target body and its children."""
        import mujoco

        m = self._model
        geoms = self._robot.gripper.important_geoms
        self._finger_geoms = tuple(
            np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in geoms[side]])
            for side in ("left_finger", "right_finger")
        )
        target_bodies = [b for b in range(m.nbody) if self._descends_from_target(b)]
        self._target_geoms = np.flatnonzero(np.isin(m.geom_bodyid, target_bodies))
        self._contact_ids_model = m

    def _descends_from_target(self, body: int) -> bool:
        parents = self._model.body_parentid
        while body > 0:
            if body == self._target_bid:
                return True
            body = int(parents[body])
        return False

    @property
    def _model(self):
        return self._sim_env.sim.model._model

    @property
    def _data(self):
        return self._sim_env.sim.data._data

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new episode.

        Args:
            seed: Seeds the env's RNG (Gymnasium convention); placements are then drawn from it.
            options: ``{"init_state": k}`` restores benchmark state ``k`` (0-49, evaluation);
                ``{"placement_seed": s}`` draws the placement from seed ``s`` (same ``s``, same scene).

        Returns:
            ``(observation, info)``; see ``docs/info_contract.md`` for ``info``.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"init_state", "placement_seed"}
        if unknown:
            raise ValueError(
                f"Unknown reset option(s) {sorted(unknown)}: accepted options are 'init_state' (0-"
                f"{NUM_INIT_STATES - 1}) and 'placement_seed' (int)."
            )
        init_state = options.get("init_state", self.next_init_state)
        self.next_init_state = None
        if init_state is not None and "placement_seed" in options:
            raise ValueError("Give either 'init_state' or 'placement_seed' in reset options, not both.")
        if init_state is not None:
            if isinstance(init_state, bool) or not isinstance(init_state, (int, np.integer)) or not (
                0 <= int(init_state) < NUM_INIT_STATES
            ):
                raise ValueError(
                    f"init_state={init_state!r} is not accepted: benchmark states are ints 0-"
                    f"{NUM_INIT_STATES - 1}."
                )
        placement_seed = options.get("placement_seed")
        if placement_seed is None and init_state is None:
            placement_seed = self.next_placement_seed
        self.next_placement_seed = None
        if placement_seed is None:
            placement_seed = int(self.np_random.integers(0, 2**31 - 1))
        elif isinstance(placement_seed, bool) or not isinstance(placement_seed, (int, np.integer)):
            raise ValueError(f"placement_seed={placement_seed!r} is not accepted: give an int.")

        if self._sim_env is None:
            self._make_sim()
        # LIBERO's placement samplers draw from NumPy's global RNG: seed it for this reset only and
        # give the caller's global RNG state back afterwards.
        saved = np.random.get_state()
        try:
            np.random.seed(int(placement_seed) % (2**32))
            with contextlib.redirect_stdout(io.StringIO()):
                self._libero.reset()
        finally:
            np.random.set_state(saved)
        self._ids()
        # robosuite keeps the gripper's last command across resets; clear it so that an episode depends
        # only on its seed and actions.
        self._robot.gripper.current_action = np.zeros(self._robot.gripper.dof)
        self._control_step = _control_step(self._sim_env)
        if init_state is not None:
            self._libero.set_init_state(self.init_states[int(init_state)])
        elif self.robot_init_noise > 0:
            apply_arm_start_noise(self._robot, self._sim_env.sim, placement_seed, self.robot_init_noise)
        for _ in range(self.warmup_steps):
            self._control_step(WARMUP_ACTION)
        self._target_start_z = float(self._data.xpos[self._target_bid][2])
        self._basket_start = (self._data.xpos[self._basket_bid].copy(), self._data.xquat[self._basket_bid].copy())
        self._gripper_command = float(WARMUP_ACTION[-1]) if self.warmup_steps else 0.0
        self._elapsed_steps = 0
        self._needs_reset = False
        self._episode_init_state = None if init_state is None else int(init_state)
        success = bool(self._sim_env._check_success())
        info = self._facts(success)
        info["init_state"] = -1 if init_state is None else int(init_state)
        info["placed_after_release"] = False
        return self._observation(), info

    def step(self, action):
        """Apply one 7-dim action; see the class docstring for its meaning and bounds."""
        if self._needs_reset:
            raise RuntimeError(
                "step() was called before reset() or after the episode ended (terminated on success"
                + ("" if self._step_limit() is None else f" or reached max_episode_steps={self._step_limit()}")
                + "): call reset() first."
            )
        action = self._check_action(action)
        self._control_step(action)
        self._gripper_command = float(action[-1])
        self._elapsed_steps += 1
        success = bool(self._sim_env._check_success())
        info = self._facts(success)
        terminated = bool(info[self.terminate_on])
        limit = self._step_limit()
        truncated = limit is not None and self._elapsed_steps >= limit and not terminated
        if terminated or truncated:
            self._needs_reset = True
        observation = self._observation()
        info["placed_after_release"] = terminated and self.release_check and self._release_check()
        return observation, float(success), terminated, truncated, info

    def _release_check(self) -> bool:
        """Open the gripper, hold the arm still for ``placement.release_steps`` steps: is the object placed?"""
        for _ in range(self.placement.release_steps):
            self._control_step(RELEASE_ACTION)
        self._gripper_command = float(RELEASE_ACTION[-1])
        return bool(self._facts(bool(self._sim_env._check_success()))["is_placed"])

    def _step_limit(self) -> int | None:
        return self.max_episode_steps

    def _check_action(self, action) -> np.ndarray:
        arr = np.asarray(action)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(
                f"action has dtype {arr.dtype}: expected a real-valued array of shape (7,) (float32 preferred)."
            )
        if arr.shape != (7,):
            raise ValueError(
                f"action has shape {arr.shape}: expected (7,) = delta position (3), delta rotation (3), "
                "gripper (1)."
            )
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            bad = [i for i in range(7) if not np.isfinite(arr[i])]
            raise ValueError(f"action {arr.tolist()} has non-finite entries at index {bad}: all 7 must be finite.")
        if np.any(np.abs(arr) > 1.0):
            if self.action_out_of_range == "raise":
                raise ValueError(
                    f"action {arr.tolist()} is outside [-1, 1]: pass values in range, or create the env with "
                    "action_out_of_range='clip'."
                )
            arr = np.clip(arr, -1.0, 1.0)
        return arr

    # ------------------------------------------------------------------ observations and facts
    def _state_vector(self) -> np.ndarray:
        import mujoco

        d = self._data
        eef = d.site_xpos[self._eef_sid]
        eef_quat = np.empty(4)
        mujoco.mju_mat2Quat(eef_quat, d.site_xmat[self._eef_sid])
        fingers = d.qpos[self._finger_q]
        tpos, tquat = d.xpos[self._target_bid], d.xquat[self._target_bid]
        bpos, bquat = d.xpos[self._basket_bid], d.xquat[self._basket_bid]
        return np.concatenate([eef, eef_quat, fingers, tpos, tquat, bpos, bquat, tpos - eef, bpos - tpos]).astype(
            np.float32
        )

    def _observation(self) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        if self.obs_mode in ("rgb", "rgb_state"):
            for key, cam in CAMERAS.items():
                obs[key] = self._render_camera(cam, self.image_size)
        if self.obs_mode in ("state", "rgb_state"):
            obs["state"] = self._state_vector()
        return obs

    def _facts(self, success: bool) -> dict[str, Any]:
        import mujoco

        env = self._sim_env
        d = self._data
        eef = d.site_xpos[self._eef_sid].copy()
        target = d.xpos[self._target_bid].copy()
        basket = d.xpos[self._basket_bid].copy()
        eef_quat = np.empty(4)
        mujoco.mju_mat2Quat(eef_quat, d.site_xmat[self._eef_sid])
        fingers = d.qpos[self._finger_q]
        states = env.object_states_dict
        in_basket = bool(states[self._contain_region].check_contain(states[self._target_name]))
        left, right = self._finger_contacts()
        rise, shift_xy, tilt = basket_motion(*self._basket_start, basket, d.xquat[self._basket_bid])
        disturbed = is_disturbed(rise, shift_xy, tilt, self.placement)
        released = not (left or right)
        return {
            "is_success": success,
            "task_id": self.task.task_id,
            "instruction": self.task.instruction,
            "eef_pos": eef,
            "target_pos": target,
            "basket_pos": basket,
            "eef_quat": eef_quat,
            "target_quat": d.xquat[self._target_bid].copy(),
            "gripper_opening": float(fingers[0] - fingers[1]),
            "target_grasped": left and right and self._gripper_command > 0,
            "target_released": released,
            "target_lift": float(target[2] - self._target_start_z),
            "target_in_basket": in_basket,
            "basket_rise": rise,
            "basket_shift_xy": shift_xy,
            "basket_tilt_deg": tilt,
            "basket_disturbed": disturbed,
            "is_placed": success and released and not disturbed,
            "eef_to_target": float(np.linalg.norm(target - eef)),
            "target_to_basket": float(np.linalg.norm(basket - target)),
            "target_to_basket_xy": float(np.linalg.norm((basket - target)[:2])),
            "elapsed_steps": self._elapsed_steps,
        }

    def _finger_contacts(self) -> tuple[bool, bool]:
        """Whether the left and the right finger (any of their collision geoms) touch the target now."""
        d = self._data
        n = d.ncon
        g1, g2 = d.contact.geom1[:n], d.contact.geom2[:n]
        on_target1, on_target2 = np.isin(g1, self._target_geoms), np.isin(g2, self._target_geoms)
        return tuple(
            bool(np.any((np.isin(g1, side) & on_target2) | (np.isin(g2, side) & on_target1)))
            for side in self._finger_geoms
        )

    # ------------------------------------------------------------------ rendering
    def _renderer(self, size: tuple[int, int]):
        import mujoco

        entry = self._renderers.get(size)
        if entry is not None and entry[1] is not self._model:
            entry[0].close()
            entry = None
        if entry is None:
            model = self._model
            if not self.msaa:
                model.vis.quality.offsamples = 0
            model.vis.global_.offheight = max(model.vis.global_.offheight, size[0])
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, size[1])
            entry = (mujoco.Renderer(model, height=size[0], width=size[1]), model)
            self._renderers[size] = entry
            _close_open_envs_first_at_exit()
        return entry[0]

    def _render_camera(self, camera: str, size: tuple[int, int]) -> np.ndarray:
        r = self._renderer(size)
        r.update_scene(self._data, camera=camera, scene_option=self._scene_option())
        return r.render().copy()

    def _scene_option(self):
        import mujoco

        if getattr(self, "_vopt", None) is None:
            # As robosuite renders: visual meshes (geom group 1) only, collision meshes (group 0) hidden.
            self._vopt = mujoco.MjvOption()
            self._vopt.geomgroup[0] = 0
        return self._vopt

    def render(self) -> np.ndarray | None:
        """Return the agentview camera frame (``render_size``, upright), or None without a render mode."""
        if self.render_mode is None:
            gym.logger.warn("render() was called without render_mode; create the env with render_mode='rgb_array'.")
            return None
        if self._sim_env is None:
            raise RuntimeError("render() needs a running simulator: call reset() first.")
        return self._render_camera(CAMERAS["agentview"], self.render_size)

    def close(self) -> None:
        for r, _ in self._renderers.values():
            with contextlib.suppress(Exception):
                r.close()
        self._renderers.clear()
        if self._libero is not None:
            with contextlib.suppress(Exception):
                self._libero.close()
        self._libero = None
        self._sim_env = None
        super().close()
