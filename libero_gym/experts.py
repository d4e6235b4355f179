"""A scripted pick-and-place expert for LIBERO-Object that uses privileged simulator state.

It reads only the documented ``info`` facts (``eef_pos``, ``target_pos``, ``basket_pos``,
``gripper_opening``, ``target_grasped``) and the task's per-object grasp height, and drives the OSC_POSE
controller with a proportional law. It generates demonstrations for supervised fine-tuning and drives the
tests of the environment and the rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from libero_gym.tasks import ObjectTask, get_task

__all__ = ["LIFT_RULES", "ExpertConfig", "ScriptedExpert", "run_expert_episode"]

POS_SCALE = 0.05
"""Metres of end-effector motion commanded by a position action of 1.0 (robosuite OSC_POSE default)."""

ROT_SCALE = 0.5
"""Radians of end-effector rotation commanded by a rotation action of 1.0 (robosuite OSC_POSE default)."""


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _yaw_error(eef_quat: np.ndarray, target_quat: np.ndarray, offset: float = 0.0) -> float:
    """Yaw (rad, about world z) that turns the gripper's closing axis onto the target's short side.

    The fingers close along the end effector's local y axis; the target's local y axis is its short
    horizontal side for the boxes of LIBERO-Object. The gripper is symmetric, so the error is wrapped
    into [-pi/2, pi/2].
    """
    closing = _quat_to_mat(eef_quat)[:, 0]
    short = _quat_to_mat(target_quat)[:, 1]
    err = np.arctan2(short[1], short[0]) + offset - np.arctan2(closing[1], closing[0])
    return float((err + np.pi / 2) % np.pi - np.pi / 2)


@dataclass(frozen=True)
class ExpertConfig:
    """Waypoint geometry and gains of the scripted expert (distances in metres).

    Attributes:
        approach_height: Height above the grasp point where the gripper lines up before descending.
        carry_height: Absolute height (world z) of the end effector while carrying the object.
        release_height: Height of the object's origin above the basket origin when the gripper opens.
        gain: Proportional gain: action = gain * position error / POS_SCALE, clipped to [-1, 1].
        xy_tolerance: Horizontal alignment needed before descending onto the object or the basket.
        z_tolerance: Vertical error accepted when a waypoint is reached.
        close_steps: Under the ``"timer"`` lift rule, the least steps the gripper is commanded closed before
            lifting; it then waits until the fingers stop moving (at most three times as long). With 0 the cap is
            0 too: the expert starts lifting at the first closed step and the fingers close during the slow lift.
            Under ``"still"`` it is only the cap (three times as long).
        lift_rule: When the closed gripper starts lifting. ``"timer"``: after ``close_steps`` steps once the
            fingers have settled; when they settle early, the expert holds at a still state for a count the
            state does not show, which a policy without memory cloned from it cannot follow (it holds for
            good). ``"still"``: at the first step at which the fingers have closed by more than
            ``5 * still_opening`` and moved less than ``still_opening`` since the previous step, so that every
            hold is at a state where the fingers still move, and the first still state is labelled "lift".
            While closing, it also goes on closing in on the grasp point (the descent's law, at ``slow_speed``)
            instead of stopping dead: a policy that picks each action dimension on its own, cloned from a
            stop, can take the stop's z (0) with the descent's open gripper just above the grasp, and hover
            there for good.
        still_opening: See ``lift_rule`` (metres of finger opening per step).
        open_steps: Steps the gripper is held open over the basket at the end.
        max_phase_steps: A phase that lasts longer than this is abandoned and the next one starts.
        stall_steps: While descending, this many steps with less than ``stall_distance`` of motion
            count as contact with the floor or the object: the gripper closes there.
        stall_distance: See ``stall_steps``.
        lifted_height: The grasp counts as failed (and the expert tries again from above) if the target
            is not this much higher than at the start after the lift.
        max_attempts: Grasp attempts before the expert gives up.
        yaw_gain: Proportional gain of the yaw alignment (for targets with ``align_yaw``).
        slow_speed: Largest position action while descending onto the object and while lifting it off
            the floor (the first ``lifted_height``), so that it is neither pushed away nor shaken loose.
        retry_yaw: For ``align_yaw`` targets, extra gripper yaw (rad) on a retry, alternating in sign.
        retry_shift: For ``align_yaw`` targets, shift (m) of the grasp point along the long side on a
            retry, on the side of the extra yaw.
    """

    approach_height: float = 0.08
    carry_height: float = 0.28
    release_height: float = 0.10
    gain: float = 1.5
    xy_tolerance: float = 0.01
    z_tolerance: float = 0.01
    close_steps: int = 6
    lift_rule: str = "timer"
    still_opening: float = 1e-3
    open_steps: int = 15
    max_phase_steps: int = 60
    stall_steps: int = 4
    stall_distance: float = 0.002
    lifted_height: float = 0.03
    max_attempts: int = 3
    yaw_gain: float = 1.5
    slow_speed: float = 0.4
    retry_yaw: float = 0.25
    retry_shift: float = 0.012


LIFT_RULES = ("timer", "still")
"""Accepted values of ``ExpertConfig.lift_rule``."""

_PHASES = ("approach", "descend", "close", "lift", "carry", "lower", "release", "done")


class ScriptedExpert:
    """Privileged-state pick-and-place policy for one LIBERO-Object env.

    Example:
        >>> import gymnasium as gym, libero_gym  # doctest: +SKIP
        >>> env = gym.make("LiberoObject-Task4-v0")  # doctest: +SKIP
        >>> expert = ScriptedExpert(task=4)  # doctest: +SKIP
        >>> obs, info = env.reset(seed=0); expert.reset()  # doctest: +SKIP
        >>> action = expert.act(info)  # doctest: +SKIP

    Args:
        task: Task number 1-10 or instruction (sets the grasp height).
        config: Waypoint geometry and gains.
        noise: Standard deviation of Gaussian noise added to the x and y position actions that :meth:`act`
            returns for execution (0 = deterministic). :attr:`intended` keeps the action without it: the
            expert's answer to the state the noise led to, which is what a demonstration records (noise
            injection as in DART, Laskey et al. 2017: the set shows how to come back from a miss). z is left
            alone: a noisy descent can stall, and the expert closes the gripper on a stall.
        seed: Seed of the noise generator.
    """

    def __init__(
        self, task: int | str | ObjectTask, config: ExpertConfig | None = None, noise: float = 0.0, seed: int = 0
    ) -> None:
        self.task = task if isinstance(task, ObjectTask) else get_task(task)
        self.config = config or ExpertConfig()
        if self.config.lift_rule not in LIFT_RULES:
            raise ValueError(
                f"lift_rule={self.config.lift_rule!r} is not accepted: choose from {', '.join(LIFT_RULES)}.")
        if noise < 0:
            raise ValueError(f"noise={noise!r} is not accepted: give a standard deviation >= 0.")
        self.noise = noise
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the current episode; call after each env reset."""
        self.phase = "approach"
        self._phase_steps = 0
        self._attempts = 1
        self._z_history: list[float] = []
        self._yaw = 0.0
        self.intended: np.ndarray | None = None
        """The expert's own (noise-free) action of the last :meth:`act`; None before the first."""

    def _next(self, phase: str | None = None) -> None:
        self.phase = phase or _PHASES[_PHASES.index(self.phase) + 1]
        self._phase_steps = 0
        self._z_history = []

    def _move(
        self, eef: np.ndarray, goal: np.ndarray, gripper: float, yaw: float = 0.0, speed: float = 1.0
    ) -> np.ndarray:
        delta = np.clip(self.config.gain * (goal - eef) / POS_SCALE, -speed, speed)
        rot = np.array([0.0, 0.0, np.clip(self.config.yaw_gain * yaw / ROT_SCALE, -1.0, 1.0)])
        return np.concatenate([delta, rot, [gripper]]).astype(np.float32)

    def _stalled(self, z: float) -> bool:
        self._z_history.append(z)
        n = self.config.stall_steps
        return len(self._z_history) > n and abs(self._z_history[-n - 1] - z) < self.config.stall_distance

    def act(self, info: dict[str, Any]) -> np.ndarray:
        """Action to execute at the current step, from the env's latest ``info``.

        Sets :attr:`intended` to the expert's own action; with ``noise`` the returned one differs from it by
        Gaussian noise on x and y.

        Args:
            info: The ``info`` dict of the last ``reset``/``step`` of a single env.

        Returns:
            A float32 action of shape (7,).
        """
        self.intended = self._intended_action(info)
        if self.noise <= 0:
            return self.intended
        executed = self.intended.copy()
        executed[:2] = np.clip(executed[:2] + self._rng.normal(0.0, self.noise, 2), -1.0, 1.0)
        return executed

    def _intended_action(self, info: dict[str, Any]) -> np.ndarray:
        """The expert's action for the current step, without noise.

        Args:
            info: The ``info`` dict of the last ``reset``/``step`` of a single env.

        Returns:
            A float32 action of shape (7,).
        """
        c = self.config
        eef = np.asarray(info["eef_pos"], dtype=np.float64)
        target = np.asarray(info["target_pos"], dtype=np.float64)
        basket = np.asarray(info["basket_pos"], dtype=np.float64)
        grasp = target + np.array([0.0, 0.0, self.task.grasp_height])
        yaw = 0.0
        if self.task.align_yaw and self.phase in ("approach", "descend"):
            # Retries turn the gripper a little and slide along the box's long side, away from whatever
            # blocked the fingers on the previous attempt (neighbouring objects stand close).
            turn = c.retry_yaw * ((self._attempts - 1) * (-1) ** self._attempts)
            yaw = _yaw_error(np.asarray(info["eef_quat"]), np.asarray(info["target_quat"]), self.task.grasp_yaw) + turn
            long_axis = _quat_to_mat(np.asarray(info["target_quat"]))[:, 0]
            grasp = grasp + c.retry_shift * np.sign(turn) * long_axis * np.array([1.0, 1.0, 0.0])
        self._phase_steps += 1
        if self._phase_steps > c.max_phase_steps and self.phase not in ("release", "done"):
            self._next()

        open_cmd = -1.0
        if self.phase == "approach":
            goal = grasp + np.array([0.0, 0.0, c.approach_height])
            aligned = abs(yaw) < 0.05
            if np.linalg.norm((goal - eef)[:2]) < c.xy_tolerance and abs(goal[2] - eef[2]) < 2 * c.z_tolerance and aligned:
                self._next()
            else:
                return self._move(eef, goal, open_cmd, yaw)
        if self.phase == "descend":
            if abs(grasp[2] - eef[2]) < c.z_tolerance or self._stalled(float(eef[2])):
                self._next()
            else:
                return self._move(eef, grasp, open_cmd, yaw, speed=c.slow_speed)
        if self.phase == "close":
            opening = self._z_history
            opening.append(float(info["gripper_opening"]))
            if c.lift_rule == "still":
                closed = opening[0] - opening[-1] > 5 * c.still_opening
                lift = closed and abs(opening[-2] - opening[-1]) < c.still_opening
            else:
                settled = len(opening) > 3 and abs(opening[-4] - opening[-1]) < 5e-4
                lift = self._phase_steps > c.close_steps and settled
            if lift or self._phase_steps > 3 * c.close_steps:
                self._next()
                self._lift_start = float(target[2])
            elif c.lift_rule == "still":  # close in on the grasp point rather than stop dead
                return self._move(eef, np.array([eef[0], eef[1], grasp[2]]), 1.0, speed=c.slow_speed)
            else:
                return self._move(eef, eef, 1.0)
        # From here on, the target's offset from the end effector is held while carrying.
        if self.phase == "lift":
            goal = np.array([eef[0], eef[1], c.carry_height])
            slow = target[2] - self._lift_start < c.lifted_height
            if abs(goal[2] - eef[2]) < 2 * c.z_tolerance:
                if target[2] - self._lift_start < c.lifted_height and self._attempts < c.max_attempts:
                    self._attempts += 1
                    self._next("approach")
                    return self._move(eef, eef, -1.0)
                self._next()
            else:
                return self._move(eef, goal, 1.0, speed=c.slow_speed if slow else 1.0)
        offset = eef - target
        if self.phase == "carry":
            goal_obj = np.array([basket[0], basket[1], target[2]])
            goal = goal_obj + offset
            goal[2] = c.carry_height
            if np.linalg.norm((basket - target)[:2]) < 2 * c.xy_tolerance:
                self._next()
            else:
                return self._move(eef, goal, 1.0)
        if self.phase == "lower":
            goal = np.array([basket[0], basket[1], basket[2] + c.release_height]) + offset
            if target[2] - basket[2] < c.release_height + c.z_tolerance:
                self._next()
            else:
                return self._move(eef, goal, 1.0)
        if self.phase == "release":
            if self._phase_steps > c.open_steps:
                self._next()
            return self._move(eef, eef, -1.0)
        # done: lift the open gripper clear of the basket
        return self._move(eef, np.array([eef[0], eef[1], c.carry_height]), -1.0)


def run_expert_episode(
    env, expert: ScriptedExpert, *, seed: int | None = None, options: dict | None = None, max_steps: int = 280
) -> dict[str, Any]:
    """Run one expert episode on a single env and return its record.

    Args:
        env: A LIBERO-Object env (``gym.make(...)``), any obs mode.
        expert: The expert for the env's task.
        seed: Passed to ``env.reset``.
        options: Passed to ``env.reset`` (e.g. ``{"init_state": k}``).
        max_steps: Step cap.

    Returns:
        A dict with ``success`` (bool), ``steps`` (int), ``observations`` (list), ``actions`` (array
        [T, 7], as executed), ``intended_actions`` (array [T, 7], the expert's own: equal to ``actions``
        without noise), ``infos`` (list of the T+1 infos, reset first) and ``rewards`` (array [T]).
    """
    obs, info = env.reset(seed=seed, options=options)
    expert.reset()
    observations, actions, intended, infos, rewards = [obs], [], [], [info], []
    success = False
    for _ in range(max_steps):
        action = expert.act(info)
        intended.append(expert.intended)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        infos.append(info)
        rewards.append(reward)
        if info["is_success"]:
            success = True
        if terminated or truncated:
            break
    return {
        "success": success,
        "steps": len(actions),
        "observations": observations,
        "actions": np.asarray(actions, dtype=np.float32).reshape(-1, 7),
        "intended_actions": np.asarray(intended, dtype=np.float32).reshape(-1, 7),
        "infos": infos,
        "rewards": np.asarray(rewards, dtype=np.float64),
    }
