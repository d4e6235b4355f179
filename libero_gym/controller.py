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
``orientation_error``, ``nullspace_torques``) on arrays of the same shapes, memory layouts and values, and
every other operation is the operation robosuite performs, in the same order. The first substep of a step
runs in NumPy exactly as robosuite writes it (it also sets the goal from the action); the other 24 run in
one numba-compiled function (numba comes with robosuite), whose matrix products go through the same
BLAS/LAPACK calls with the same arguments. No operation is reordered, fused or approximated.

Result: the simulator state (``qpos``, ``qvel``, ``ctrl`` and every derived quantity) is bit-for-bit the
state robosuite's loop produces. ``tests/libero_gym/test_controller.py`` checks ``qpos`` against raw
LIBERO over 300 steps of random actions on every task.

What it does not do: it does not update robosuite's history buffers of the robot (``robot.recent_qpos``,
``recent_ee_forcetorques``, ...), which only feed robosuite's own observables; libero_gym reads the state
from the simulator instead. After a step the controller's cached state (``controller.ee_pos``, ``J_full``,
``mass_matrix``, ...) is the one of the step's first substep, where robosuite's is the last substep's; the
next step reads it afresh either way. Controllers it does not cover (another controller type, interpolation,
variable impedance, absolute poses, several robots, RK4 integration) are detected by :func:`supports` and
run through robosuite's own loop.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numba
import numpy as np
from robosuite.utils.control_utils import nullspace_torques, opspace_matrices, orientation_error

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


def _numpy_gives_column_order() -> bool:
    """Whether NumPy hands robosuite column-ordered Jacobians and mass matrix (the kernel's assumption)."""
    jac, mass, idx = np.zeros((3, 9)), np.zeros((9, 9)), [0, 1, 2]
    picked = (jac[:, idx], np.vstack([jac[:, idx], jac[:, idx]]), mass[idx, :][:, idx])
    return all(a.flags.f_contiguous and not a.flags.c_contiguous for a in picked)


@numba.njit(cache=True)
def _substep_controls(
    site_xpos, site_xmat, jacp, jacr, qpos, qvel, full_mass, qfrc_bias, q_idx, v_idx, goal_pos, goal_ori,
    kp, kd, initial_joint, torque_low, torque_high, gripper_action, gripper_delta, gripper_bias, gripper_weight,
    ctrl, arm_actuators, gripper_actuators,
):  # pragma: no cover - compiled
    """One substep of robosuite's arm + gripper control, compiled: writes ``ctrl``, returns the arm torques.

    ``Controller.update``, ``OperationalSpaceController.run_controller`` (fixed impedance, uncoupled),
    ``SingleArm.control``'s torque clipping and ``PandaGripper.format_action`` + ``grip_action``, in
    robosuite's order. It calls robosuite's own compiled ``orientation_error``, ``opspace_matrices`` and
    ``nullspace_torques``; ``gripper_action`` (the gripper's ``current_action``) is updated in place.
    """
    ee_pos = site_xpos.copy()
    ee_ori_mat = site_xmat.reshape((3, 3)).copy()
    ee_pos_vel = np.dot(jacp, qvel)
    ee_ori_vel = np.dot(jacr, qvel)
    joint_pos = qpos[q_idx]
    joint_vel = qvel[v_idx]
    # Column order, as NumPy's advanced indexing and vstack hand them to robosuite: the compiled linear
    # algebra passes other BLAS/LAPACK arguments for other layouts, which changes the last bits.
    J_pos = np.asfortranarray(jacp[:, v_idx])
    J_ori = np.asfortranarray(jacr[:, v_idx])
    J_full = np.asfortranarray(np.vstack((J_pos, J_ori)))
    mass_matrix = np.asfortranarray(full_mass[v_idx, :][:, v_idx])
    ori_error = orientation_error(goal_ori, ee_ori_mat)
    desired_force = np.multiply(goal_pos - ee_pos, kp[0:3]) + np.multiply(-ee_pos_vel, kd[0:3])
    desired_torque = np.multiply(ori_error, kp[3:6]) + np.multiply(-ee_ori_vel, kd[3:6])
    _, lambda_pos, lambda_ori, nullspace_matrix = opspace_matrices(mass_matrix, J_full, J_pos, J_ori)
    wrench = np.concatenate((np.dot(lambda_pos, desired_force), np.dot(lambda_ori, desired_torque)))
    torques = np.dot(J_full.T, wrench) + qfrc_bias[v_idx]
    torques += nullspace_torques(mass_matrix, nullspace_matrix, initial_joint, joint_pos, joint_vel)
    torques = np.minimum(np.maximum(torques, torque_low), torque_high)  # np.clip
    gripper_action[:] = np.minimum(np.maximum(gripper_action + gripper_delta, -1.0), 1.0)
    gripper_ctrl = gripper_bias + gripper_weight * gripper_action
    for k in range(gripper_actuators.shape[0]):
        ctrl[gripper_actuators[k]] = gripper_ctrl[k]
    for k in range(arm_actuators.shape[0]):
        ctrl[arm_actuators[k]] = torques[k]
    return torques


def _use_kernel() -> bool:
    """The compiled substep reproduces robosuite's only where robosuite's helpers are compiled too."""
    helpers = (nullspace_torques, opspace_matrices, orientation_error)
    return all(isinstance(f, numba.core.dispatcher.Dispatcher) for f in helpers) and _numpy_gives_column_order()


class FastControlLoop:
    """Steps a robosuite env (OSC_POSE arm + Panda gripper) with ``mj_step1``/``mj_step2``.

    Build one after every ``reset`` of the robosuite env (robosuite builds a new controller there) and
    only when :func:`supports` is true.

    Args:
        env: The robosuite env (LIBERO's problem class), after ``reset``.
        use_kernel: Run substeps 2-25 in the compiled function (the default, where robosuite's helpers are
            compiled and NumPy lays out arrays as the function assumes); False runs all of them in NumPy.
    """

    def __init__(self, env: Any, use_kernel: bool = True) -> None:
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
        self._qpos_array = np.asarray(c.qpos_index, dtype=np.int64)
        self._qvel_array = np.asarray(c.qvel_index, dtype=np.int64)
        self._arm_actuator_array = np.asarray(self._arm_actuators, dtype=np.int64)
        self._gripper_actuator_array = np.asarray(gripper_actuators, dtype=np.int64)
        self._use_kernel = use_kernel and _use_kernel()

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
        ori_error = orientation_error(c.goal_ori, c.ee_ori_mat)
        desired_force = np.multiply(c.goal_pos - c.ee_pos, self._kp_pos) + np.multiply(-c.ee_pos_vel, self._kd_pos)
        desired_torque = np.multiply(ori_error, self._kp_ori) + np.multiply(-c.ee_ori_vel, self._kd_ori)
        _, lambda_pos, lambda_ori, nullspace_matrix = opspace_matrices(c.mass_matrix, c.J_full, c.J_pos, c.J_ori)
        wrench = np.concatenate([np.dot(lambda_pos, desired_force), np.dot(lambda_ori, desired_torque)])
        torques = np.dot(c.J_full.T, wrench) + self._d.qfrc_bias[self._qvel_index]
        torques += nullspace_torques(c.mass_matrix, nullspace_matrix, c.initial_joint, c.joint_pos, c.joint_vel)
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
        use_kernel = self._use_kernel
        sid, jacp, jacr, full_mass = self._sid, self._jacp, self._jacr, self._full_mass
        for i in range(self._n_substeps):
            mujoco.mj_step1(m, d)
            if i == 0 or not use_kernel:
                if c.new_update:
                    # As robosuite: the first step after a reset runs on the state the controller was built
                    # from (new_update is False until its first run_controller).
                    self._read_state()
                if i == 0:
                    c.set_goal(arm_action)
                torques = np.clip(self._arm_torques(), self._torque_low, self._torque_high)
                gripper.current_action = np.clip(gripper.current_action + gripper_delta, -1.0, 1.0)
                d.ctrl[self._gripper_actuators] = self._gripper_bias + self._gripper_weight * gripper.current_action
                d.ctrl[self._arm_actuators] = torques
            else:
                mujoco.mj_jacSite(m, d, jacp, jacr, sid)
                _full_mass_matrix(m, d, full_mass)
                torques = _substep_controls(
                    d.site_xpos[sid], d.site_xmat[sid], jacp, jacr, d.qpos, d.qvel, full_mass, d.qfrc_bias,
                    self._qpos_array, self._qvel_array, c.goal_pos, c.goal_ori, c.kp, c.kd, c.initial_joint,
                    self._torque_low, self._torque_high, gripper.current_action, gripper_delta,
                    self._gripper_bias, self._gripper_weight, d.ctrl, self._arm_actuator_array,
                    self._gripper_actuator_array,
                )
            c.new_update = True
            robot.torques = torques
            mujoco.mj_step2(m, d)
        env.cur_time += env.control_timestep
        env._post_action(action)
