"""The paper table's cells as Ray tasks, across the cores of a cluster (``paper_table run --ray-address``).

Each cell (one task, method and seed: its SFT or its RL run, then its evaluation) runs as one Ray task in a
temporary directory of whichever node Ray picks. The task returns the cell's JSON and the files of its run
(policies, metrics, checkpoint), and the driver writes them under ``--out-dir`` exactly where a local run puts
them. Nothing is shared between nodes but Ray's object store, so a cluster needs no shared file system.

Order and resumption are those of a local run:

- a cell whose JSON exists is skipped, and each finished cell is written the moment it arrives, so a driver
  stopped at any point loses only the cells in flight; the same command continues;
- the RL cells of a (task, seed, regime) start from the policy of that (task, seed, regime)'s SFT cell (the
  weak and the paper-level regime each have theirs): they are submitted
  when the SFT cell has finished (or at once when its policy is on disk), and the policy travels with them;
  when the SFT cell failed they train the same SFT policy themselves, as a local run does;
- every cell runs the same code with the same seeds as a local run, with one torch thread, so its results
  (per-state successes, weights digests, training history) are identical; only timings, dates and host names
  differ.

A node needs this project installed (``pip install -e ".[all]"``, the same as for
:class:`libero_gym.RayVectorEnv`); the ``benchmarks`` package travels with each task (Ray's ``py_modules``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from libero_tgrpo.files import write_bytes

SFT_POLICY = Path("sft") / "policy.pt"
"""Where a cell's run directory keeps the SFT policy that its RL cells start from."""
DEFAULT_CPUS_PER_CELL = 2.0
"""Ray CPUs reserved for one cell: the policy process plus the default two evaluation env workers run in
turn with the 8 training env workers, which mostly wait on one another on small machines."""


def job_runtime_env() -> dict[str, Any]:
    """Ray's runtime environment for a job that runs cells: the ``benchmarks`` package travels to every node
    (``py_modules``) and MuJoCo renders headless (``MUJOCO_GL=egl``). Pass it to ``ray.init`` when starting Ray
    yourself before :func:`run_cells_on_ray`."""
    import benchmarks

    return {"py_modules": [str(Path(benchmarks.__file__).resolve().parent)], "env_vars": {"MUJOCO_GL": "egl"}}


def _cell_task(task: int, method: str, seed: int, overrides: dict[str, Any],
               sft_policy: bytes | None, regime: str = "weak") -> dict[str, Any]:
    """Run one cell in a temporary directory; return its JSON, its run's files and where it ran.

    With ``sft_policy`` (the bytes of the SFT cell's ``policy.pt``) the cell starts from that policy, as a local
    RL cell does from the file on disk; its copy is not sent back.
    """
    import platform

    from benchmarks.paper_table import Cell, run_cell

    cell = Cell(task, method, seed, regime)
    with tempfile.TemporaryDirectory(prefix="paper-table-cell-") as tmp:
        out = Path(tmp)
        run_dir = cell.run_dir(out)
        if sft_policy is not None:
            write_bytes(run_dir / SFT_POLICY, sft_policy)
        payload = run_cell(out, cell, overrides)
        files = {
            p.relative_to(run_dir).as_posix(): p.read_bytes()
            for p in sorted(run_dir.rglob("*"))
            if p.is_file() and not (sft_policy is not None and p.relative_to(run_dir) == SFT_POLICY)
        }
    return {"payload": payload, "files": files, "host": platform.node()}


def _localise(payload: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The cell's JSON as a local run writes it: its config's output directory is the driver's run directory."""
    config = payload.get("config")
    if isinstance(config, dict) and "output_dir" in config:
        payload = {**payload, "config": {**config, "output_dir": str(run_dir)}}
    return payload


def run_cells_on_ray(
    out_dir: Path,
    cells: Sequence[Any],
    overrides: dict[str, Any],
    *,
    address: str,
    record: Callable[[Any, dict[str, Any] | None, str | None], None],
    cpus_per_cell: float = DEFAULT_CPUS_PER_CELL,
    max_cells: int | None = None,
    time_budget_min: float | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Run ``cells`` (those without a JSON under ``out_dir``) as Ray tasks; returns how many were started.

    Args:
        out_dir: the table's output directory (cells and runs are written there by this process).
        cells: the plan (:class:`benchmarks.paper_table.Cell`), in order.
        overrides: changes to the main job's config (``PipelineConfig.replace`` keys), as for a local run.
        address: the Ray cluster to join (``"auto"``, ``"ray://head:10001"``, ``"local"`` for a new local one).
            A Ray already initialised in this process is used as it is (start it with
            :func:`job_runtime_env`).
        record: ``record(cell, payload, error)`` writes a finished cell (payload) or a failed one (error).
        cpus_per_cell: Ray CPUs each cell reserves (so many cells run at once per node).
        max_cells: start at most this many new cells.
        time_budget_min: start no new cell after this many minutes (cells in flight finish).
        say: progress lines.

    Raises:
        ValueError: for ``cpus_per_cell <= 0``.
        ImportError: when Ray is not installed (the ``ray`` extra).
    """
    if not cpus_per_cell > 0:
        raise ValueError(f"cpus_per_cell={cpus_per_cell!r} is not accepted: give a number of CPUs > 0.")
    try:
        import ray
    except ImportError as e:  # pragma: no cover - the full install has ray
        raise ImportError("--ray-address needs Ray: pip install 'libero-tgrpo[ray]'") from e
    from benchmarks.paper_table import Cell, cell_overrides

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 logging_level="warning", runtime_env=job_runtime_env())
    remote = ray.remote(_cell_task).options(num_cpus=cpus_per_cell, max_retries=0)
    todo = [c for c in cells if not c.path(out_dir).is_file()]
    waiting: dict[Cell, list[Any]] = {}  # SFT cell -> its RL cells, to start when it is done
    in_flight: dict[Any, Any] = {}  # object ref -> cell
    started = 0
    start = time.perf_counter()
    sft_todo = {c for c in todo if not c.is_rl}

    def may_start() -> bool:
        if max_cells is not None and started >= max_cells:
            return False
        return time_budget_min is None or time.perf_counter() - start <= 60 * time_budget_min

    def submit(cell: Any) -> None:
        nonlocal started
        policy_file = cell.run_dir(out_dir) / SFT_POLICY
        sft_policy = policy_file.read_bytes() if cell.is_rl and policy_file.is_file() else None
        try:  # a PPO cell's env-step budget is read here, from its TGRPO cell's JSON
            cell_over = cell_overrides(out_dir, cell, overrides)
        except RuntimeError as e:
            record(cell, None, str(e))
            return
        in_flight[remote.remote(cell.task, cell.method, cell.seed, cell_over, sft_policy, cell.regime)] = cell
        started += 1
        say(f"--- cell {cell.label} started on Ray")

    tgrpo_todo = {c for c in todo if c.method == "tgrpo"}
    for cell in todo:
        needs = cell.tgrpo if cell.method == "ppo" else None
        if needs in tgrpo_todo:  # PPO runs at the env steps of its TGRPO cell: it starts when that one is done
            waiting.setdefault(needs, []).append(cell)
        elif cell.is_rl and cell.sft in sft_todo:
            waiting.setdefault(cell.sft, []).append(cell)
        elif may_start():
            submit(cell)
    done = 0
    while in_flight:
        [ref], _ = ray.wait(list(in_flight), num_returns=1)
        cell = in_flight.pop(ref)
        done += 1
        try:
            result = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a failed cell is recorded and the plan goes on
            error = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            say(f"cell {cell.label} failed on Ray: {error}")
            record(cell, None, error)
        else:
            run_dir = cell.run_dir(out_dir)
            for rel, data in result["files"].items():
                write_bytes(run_dir / rel, data)
            record(cell, _localise(result["payload"], run_dir), None)
            say(f"    (ran on {result['host']}; {done} finished, {len(in_flight)} in flight)")
        for rl_cell in waiting.pop(cell, []):
            if may_start():
                submit(rl_cell)
    if len(todo) > started:
        say("cell limit or time budget reached; run the same command again to continue")
    sys.stdout.flush()
    return started
