"""The ten LIBERO-Object tasks, numbered as in the TGRPO paper (task number = LIBERO index + 1)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ObjectTask", "TASKS", "get_task", "NUM_INIT_STATES"]

NUM_INIT_STATES = 50
"""Number of fixed benchmark initial states per task (the evaluation set)."""


@dataclass(frozen=True)
class ObjectTask:
    """One LIBERO-Object task.

    Attributes:
        task_id: Task number 1-10 (paper numbering).
        libero_index: Index of the task in LIBERO's ``libero_object`` suite (``task_id - 1``).
        object_name: Name of the target object in the BDDL problem (``<object_name>_1`` in the scene).
        instruction: The language instruction given to the policy.
        grasp_height: Height above the object's body origin (metres) at which the scripted expert closes
            the gripper. Tall bottles need a higher grasp than low cans and boxes.
        align_yaw: The object is a box longer than the open gripper: the expert turns the gripper to close
            across its short side.
        grasp_yaw: For ``align_yaw`` objects, extra gripper yaw (rad) from the object's short side, to keep
            the fingers off a neighbour that stands close in every benchmark layout.
    """

    task_id: int
    libero_index: int
    object_name: str
    instruction: str
    grasp_height: float
    align_yaw: bool = False
    grasp_yaw: float = 0.0

    @property
    def target_body(self) -> str:
        """Name of the target object instance in the MuJoCo scene."""
        return f"{self.object_name}_1"


def _task(
    task_id: int,
    object_name: str,
    label: str,
    grasp_height: float,
    align_yaw: bool = False,
    grasp_yaw: float = 0.0,
) -> ObjectTask:
    return ObjectTask(
        task_id=task_id,
        libero_index=task_id - 1,
        object_name=object_name,
        instruction=f"pick up the {label} and place it in the basket",
        grasp_height=grasp_height,
        align_yaw=align_yaw,
        grasp_yaw=grasp_yaw,
    )


TASKS: dict[int, ObjectTask] = {
    t.task_id: t
    for t in (
        _task(1, "alphabet_soup", "alphabet soup", 0.01),
        _task(2, "cream_cheese", "cream cheese", 0.0, align_yaw=True, grasp_yaw=-0.3),
        _task(3, "salad_dressing", "salad dressing", 0.05),
        _task(4, "bbq_sauce", "bbq sauce", 0.03),
        _task(5, "ketchup", "ketchup", 0.05),
        _task(6, "tomato_sauce", "tomato sauce", 0.01),
        _task(7, "butter", "butter", 0.0, align_yaw=True),
        _task(8, "milk", "milk", 0.04),
        _task(9, "chocolate_pudding", "chocolate pudding", 0.0, align_yaw=True),
        _task(10, "orange_juice", "orange juice", 0.04),
    )
}
"""All tasks by paper number (1-10)."""


def get_task(task: int | str) -> ObjectTask:
    """Look a task up by its number (1-10) or its instruction text.

    Args:
        task: Paper task number 1-10 (an ``int`` or a digit string), or the instruction text
            (case and surrounding whitespace are ignored), e.g. ``"pick up the bbq sauce and place it in the
            basket"``.

    Returns:
        The matching :class:`ObjectTask`.

    Raises:
        ValueError: If no task matches; the message lists the accepted values.
    """
    if isinstance(task, bool):
        raise ValueError(f"Unknown LIBERO-Object task {task!r}: expected an int 1-10 or an instruction.")
    if isinstance(task, int) or (isinstance(task, str) and task.strip().isdigit()):
        number = int(task)
        if number in TASKS:
            return TASKS[number]
        raise ValueError(
            f"Unknown LIBERO-Object task number {task!r}: accepted task numbers are 1-10 "
            "(paper numbering; Task4 is the bbq sauce task)."
        )
    if isinstance(task, str):
        wanted = " ".join(task.strip().lower().split())
        for t in TASKS.values():
            if t.instruction == wanted:
                return t
        accepted = "\n  ".join(f"{t.task_id}: {t.instruction!r}" for t in TASKS.values())
        raise ValueError(f"Unknown LIBERO-Object instruction {task!r}. Accepted instructions:\n  {accepted}")
    raise ValueError(
        f"Unknown LIBERO-Object task {task!r} of type {type(task).__name__}: expected an int 1-10 or the "
        "instruction text."
    )
