"""A faster control loop for LIBERO's arm: robosuite's OSC_POSE controller and Panda gripper, same dynamics.

robosuite runs each 20 Hz env step as 25 physics substeps of

    mj_forward -> controller.update (reads kinematics, Jacobians, mass matrix) -> run_controller -> mj_step

through several layers of Python (properties rebuilding index lists and limits on every substep, copies of
every quantity). :class:`FastControlLoop` runs the same substeps as

    mj_step1 -> the same controller math on the same inputs -> mj_step2

``mj_step1`` computes exactly the position- and velocity-dependent quantities the controller reads (and
``mj_step`` would compute again); ``mj_step2`` finishes the step with the new controls. This is MuJoCo's
documented way to run a controller between the two halves of a step, and it saves one ``mj_forward`` per
substep. The controller math itself calls robosuite's own compiled functions (``opspace_matrices``,
``orientation_error``, ``nullspace_torques``) on arrays of the same shapes, layouts and values, and every
other operation is the same NumPy operation robosuite performs, in the same order.

Result: the simulator state (``qpos``, ``qvel``, ``ctrl`` and every derived quantity) is bit-for-bit the
state robosuite's loop produces. ``tests/libero_gym/test_controller.py`` checks ``qpos`` against raw
LIBERO over 300 steps of random actions on every task.

What it does not do: it does not update robosuite's history buffers of the robot (``robot.recent_qpos``,
``recent_ee_forcetorques``, ...), which only feed robosuite's own observables; libero_gym reads the state
from the simulator instead. Controllers it does not cover (another controller type, interpolation,
variable impedance, absolute poses, several robots, RK4 integration) are detected by :func:`supports` and
run through robosuite's own loop.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

__all__ = ["FastControlLoop", "supports"]

_STEP12_INTEGRATORS = (
    mujoco.mjtIntegrator.mjINT_EULER,
    mujoco.mjtIntegrator.mjINT_IMPLICIT,
    mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
)
"""Integrators that ``mj_step2`` runs as ``mj_step`` does (it runs RK4 as Euler)."""


def _full_mass_matrix(m: mujoco.MjModel, d: mujoco.MjData, out: np.ndarray) -> None:
    # MuJoCo 3.4 changed mj_fullM's arguments from (m, dst, qM) to (m, d, dst).
    if _MODERN_FULLM:
        mujoco.mj_fullM(m, d, out)
    else:
        mujoco.mj_fullM(m, out, d.qM)


_MODERN_FULLM = tuple(int(v) for v in mujoco.__version__.split(".")[:2]) >= (3, 4)


def supports(env: Any) -> bool:
    """Whether :class:`FastControlLoop` reproduces robosuite's loop for this robosuite env exactly.

    Args:
        env: A robosuite manipulation env (LIBERO's problem class), after ``reset``.
    """
    from robosuite.controllers.osc import OperationalSpaceController
    from robosuite.models.grippers.panda_gripper import PandaGripper

    if len(env.robots) != 1 or int(env.sim.model._model.opt.integrator) not in _STEP12_INTEGRATORS:
        return False
    robot = env.robots[0]
    c = robot.controller
    return (
        type(c) is OperationalSpaceController
        and c.use_ori
        and c.use_delta
        and c.impedance_mode == "fixed"
        and c.uncoupling
        and c.interpolator_pos is None
        and c.interpolator_ori is None
        and c.position_limits is None
        and c.orientation_limits is None
        and type(robot.gripper) is PandaGripper
        and robot.action_dim == 7
        and not getattr(env, "_observables", None)
    )


class FastControlLoop:
    """Steps a robosuite env (OSC_POSE arm + Panda gripper) with ``mj_step1``/``mj_step2``.

    Build one after every ``reset`` of the robosuite env (robosuite builds a new controller there) and
    only when :func:`supports` is true.

    Args:
        env: The robosuite env (LIBERO's problem class), after ``reset``.
    """

    def __init__(self, env: Any) -> None:
        from robosuite.utils.control_utils import nullspace_torques, opspace_matrices, orientation_error

        self._opspace_matrices = opspace_matrices
        self._orientation_error = orientation_error
        self._nullspace_torques = nullspace_torques
        self.env = env
        self.robot = robot = env.robots[0]
        self.controller = c = robot.controller
        sim = env.sim
        self._m = sim.model._model
        self._d = sim.data._data
        nv = self._m.nv
        self._n_substeps = int(env.control_timestep / env.model_timestep)
        self._sid = sim.model.site_name2id(c.eef_name)
        self._qpos_index = c.qpos_index
        self._qvel_index = c.qvel_index
        self._arm_actuators = robot._ref_joint_actuator_indexes
        self._torque_low, self._torque_high = robot.torque_limits
        self._control_dim = c.control_dim
        gripper_actuators = [sim.model.actuator_name2id(a) for a in robot.gripper.actuators]
        ctrl_range = sim.model.actuator_ctrlrange[gripper_actuators]
        self._gripper_actuators = gripper_actuators
        self._gripper_bias = 0.5 * (ctrl_range[:, 1] + ctrl_range[:, 0])
        self._gripper_weight = 0.5 * (ctrl_range[:, 1] - ctrl_range[:, 0])
        self._gripper_speed = robot.gripper.speed
        self._jacp = np.zeros((3, nv))
        self._jacr = np.zeros((3, nv))
        self._full_mass = np.ndarray(shape=(nv, nv), dtype=np.float64, order="C")
        self._kp_pos, self._kp_ori = np.array(c.kp[0:3]), np.array(c.kp[3:6])
        self._kd_pos, self._kd_ori = c.kd[0:3], c.kd[3:6]

    def _read_state(self) -> None:
        """Fill the controller's state as robosuite's ``Controller.update`` does, without ``mj_forward``."""
        c, m, d, sid = self.controller, self._m, self._d, self._sid
        c.ee_pos = np.array(d.site_xpos[sid])
        c.ee_ori_mat = np.array(d.site_xmat[sid].reshape([3, 3]))
        jacp, jacr = self._jacp, self._jacr
        mujoco.mj_jacSite(m, d, jacp, jacr, sid)
        c.ee_pos_vel = np.dot(jacp, d.qvel)
        c.ee_ori_vel = np.dot(jacr, d.qvel)
        c.joint_pos = np.array(d.qpos[self._qpos_index])
        c.joint_vel = np.array(d.qvel[self._qvel_index])
        c.J_pos = jacp[:, self._qvel_index]
        c.J_ori = jacr[:, self._qvel_index]
        c.J_full = np.vstack([c.J_pos, c.J_ori])
        _full_mass_matrix(m, d, self._full_mass)
        c.mass_matrix = self._full_mass[self._qvel_index, :][:, self._qvel_index]
        c.new_update = False

    def _arm_torques(self) -> np.ndarray:
        """robosuite's ``OperationalSpaceController.run_controller`` (fixed impedance, uncoupled)."""
        c = self.controller
        ori_error = self._orientation_error(c.goal_ori, c.ee_ori_mat)
        desired_force = np.multiply(c.goal_pos - c.ee_pos, self._kp_pos) + np.multiply(-c.ee_pos_vel, self._kd_pos)
        desired_torque = np.multiply(ori_error, self._kp_ori) + np.multiply(-c.ee_ori_vel, self._kd_ori)
        _, lambda_pos, lambda_ori, nullspace_matrix = self._opspace_matrices(c.mass_matrix, c.J_full, c.J_pos, c.J_ori)
        wrench = np.concatenate([np.dot(lambda_pos, desired_force), np.dot(lambda_ori, desired_torque)])
        torques = np.dot(c.J_full.T, wrench) + self._d.qfrc_bias[self._qvel_index]
        torques += self._nullspace_torques(c.mass_matrix, nullspace_matrix, c.initial_joint, c.joint_pos, c.joint_vel)
        c.torques = torques
        return torques

    def step(self, action: np.ndarray) -> None:
        """One env step (``control_timestep``) with a 7-dim float64 action, as robosuite's ``env.step``.

        Advances the env's ``timestep`` and ``cur_time`` and runs its post-action hooks, as robosuite does;
        the caller evaluates success.
        """
        env, robot, c, m, d = self.env, self.robot, self.controller, self._m, self._d
        if env.done:
            raise ValueError("executing action in terminated episode")
        env.timestep += 1
        arm_action = action[: self._control_dim]
        gripper_delta = np.array([-1.0, 1.0]) * self._gripper_speed * np.sign(action[self._control_dim :])
        gripper = robot.gripper
        for i in range(self._n_substeps):
            mujoco.mj_step1(m, d)
            if c.new_update:
                # As robosuite: the first step after a reset runs on the state the controller was built
                # from (new_update is False until its first run_controller).
                self._read_state()
            if i == 0:
                c.set_goal(arm_action)
            torques = np.clip(self._arm_torques(), self._torque_low, self._torque_high)
            c.new_update = True
            robot.torques = torques
            gripper.current_action = np.clip(gripper.current_action + gripper_delta, -1.0, 1.0)
            d.ctrl[self._gripper_actuators] = self._gripper_bias + self._gripper_weight * gripper.current_action
            d.ctrl[self._arm_actuators] = torques
            mujoco.mj_step2(m, d)
        env.cur_time += env.control_timestep
        env._post_action(action)
