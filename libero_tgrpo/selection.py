"""Keep a run's best policy on held-out training placements: early stopping that never looks at the benchmark.

RL from a good SFT policy can end below where it started (a drift late in training, a bad last group). With
``PipelineConfig.select = "heldout"`` the pipeline scores the policy greedily on ``select_placements`` held-out
training placements (:func:`heldout_placements`: scenes drawn by the env's own sampler from placement seeds
``HELDOUT_PLACEMENT_OFFSET + j``, disjoint from the training groups' and the demonstrations', with the arm's start
spread like the benchmark states', :data:`HELDOUT_ROBOT_INIT_NOISE`) at the start (the
SFT policy) and at ``select_points`` evenly spaced points of training (a fraction ``j / select_points`` of the
iterations, or for PPO of its env-step budget when that ends it first), the last being the final policy. The run
keeps the candidate with the highest held-out *placed* rate (ties: LIBERO's success, then the earlier candidate)
and evaluates that one on the benchmark states. Every method gets the same number of candidates, so the
comparison between TGRPO, its ablations and PPO stays fair.

The 50 benchmark states are never used to choose: they stay the final, untouched evaluation.

Files of a run with selection (beside the method's ``policy.pt``, which stays the final iterate):
``selection.json`` (every candidate's held-out LIBERO success and placed, the chosen one; written after each
candidate, so a resumed run goes on from it) and ``selected_policy.pt`` (the chosen weights).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from libero_gym import BENCHMARK_ROBOT_INIT_NOISE

__all__ = [
    "HELDOUT_PLACEMENT_OFFSET",
    "HELDOUT_ROBOT_INIT_NOISE",
    "SELECTION_FILE",
    "SELECTED_POLICY_FILE",
    "Candidate",
    "HeldoutSelector",
    "choose",
    "heldout_env_kwargs",
    "heldout_envs",
    "heldout_placements",
    "score_heldout",
    "selection_iterations",
]

HELDOUT_PLACEMENT_OFFSET = 8_000_000
"""Held-out placement ``j`` is drawn from placement seed ``HELDOUT_PLACEMENT_OFFSET + j``. Training groups use
``TRAIN_PLACEMENT_OFFSET (7_000_000) + seed + k * M``, which stays below it for any realistic run."""
HELDOUT_ROBOT_INIT_NOISE = BENCHMARK_ROBOT_INIT_NOISE
"""Arm-start noise (rad) of the held-out placements: the benchmark states' (``libero_gym.arm_start``). Drawn placements
start the arm at one pose; from it, 9 policies scored 14.9 placed points higher on 50 held-out placements than on the
benchmark states on average (up to 40), and 2.7 lower with this noise (``benchmarks/results/heldout_gap/``).
Selections and held-out studies made before it scored the fixed start (``env_kwargs={"robot_init_noise": 0}`` gives
it back)."""
SELECTION_FILE = "selection.json"
SELECTED_POLICY_FILE = "selected_policy.pt"


def heldout_placements(n: int) -> list[int]:
    """The placement seeds of the first ``n`` held-out scenes."""
    return [HELDOUT_PLACEMENT_OFFSET + j for j in range(n)]


def selection_iterations(iterations: int, points: int) -> list[int]:
    """The iteration counts after which a run of ``iterations`` iterations scores a candidate (the start, 0,
    is not listed): ``ceil(j * iterations / points)`` for j = 1 .. points, without repeats (30, 3: 10, 20, 30)."""
    return sorted({math.ceil(j * iterations / points) for j in range(1, points + 1)})


def heldout_env_kwargs(env_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The env arguments of held-out placements: ``env_kwargs`` with ``robot_init_noise`` set to
    :data:`HELDOUT_ROBOT_INIT_NOISE` unless it gives one."""
    return {"robot_init_noise": HELDOUT_ROBOT_INIT_NOISE, **(env_kwargs or {})}


def heldout_envs(
    task: int,
    placements: int,
    *,
    obs_mode: str = "state",
    max_steps: int | None = None,
    num_envs: int = 2,
    env_backend: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Any:
    """The evaluation envs that score ``placements`` held-out placements (at most ``num_envs`` of them), the arm's
    start spread by :data:`HELDOUT_ROBOT_INIT_NOISE` unless ``env_kwargs`` gives ``robot_init_noise``."""
    from libero_tgrpo.envs import MAX_EPISODE_STEPS, make_eval_envs

    return make_eval_envs(task, min(num_envs, placements), obs_mode=obs_mode,
                          max_episode_steps=MAX_EPISODE_STEPS if max_steps is None else max_steps,
                          **(env_backend or {}), **heldout_env_kwargs(env_kwargs))


def score_heldout(
    policy: Any,
    task: int,
    placements: int,
    *,
    obs_mode: str = "state",
    max_steps: int | None = None,
    num_envs: int = 2,
    seed: int = 0,
    temperature: float = 0.0,
    progress: bool = False,
    envs: Any = None,
    env_backend: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluation of ``policy`` (greedy unless ``temperature`` > 0) on the first ``placements`` held-out training
    placements of ``task`` (:func:`libero_tgrpo.evaluation.evaluate_benchmark` with ``placement_seeds``); ``envs``
    reuses open envs of :func:`heldout_envs`, else they are made and closed here."""
    from libero_tgrpo.envs import MAX_EPISODE_STEPS
    from libero_tgrpo.evaluation import evaluate_benchmark

    own = envs is None
    if own:
        envs = heldout_envs(task, placements, obs_mode=obs_mode, max_steps=max_steps, num_envs=num_envs,
                            env_backend=env_backend, env_kwargs=env_kwargs)
    try:
        return evaluate_benchmark(envs, policy, placement_seeds=heldout_placements(placements),
                                  max_steps=MAX_EPISODE_STEPS if max_steps is None else max_steps,
                                  temperature=temperature, seed=seed, progress=progress)
    finally:
        if own:
            envs.close()


@dataclass(frozen=True)
class Candidate:
    """One scored policy of a run: ``iteration`` 0 is the start (the SFT policy)."""

    label: str
    iteration: int
    placed_rate: float
    success_rate: float

    @property
    def rank(self) -> tuple[float, float]:
        return (self.placed_rate, self.success_rate)


def choose(candidates: Sequence[Candidate]) -> Candidate:
    """The candidate with the highest held-out placed rate, then LIBERO success; the earliest among equals (a
    later candidate must be strictly better to replace it).

    Raises:
        ValueError: for no candidates.
    """
    if not candidates:
        raise ValueError("choose() needs at least one candidate.")
    best = candidates[0]
    for c in candidates[1:]:
        if c.rank > best.rank:
            best = c
    return best


class HeldoutSelector:
    """Scores a training run's candidates on held-out placements and keeps the best weights.

    Call :meth:`consider` with the policy at the start (``done=0``) and whenever training has gone on;
    it scores a candidate only when a new selection point is reached (``done`` is the fraction of the run done,
    0-1), so a hook may call it after every iteration. ``out_dir`` receives :data:`SELECTION_FILE` and
    :data:`SELECTED_POLICY_FILE`; a selector made on a directory that has them goes on from them (a resumed run).
    """

    def __init__(
        self,
        task: int,
        out_dir: str | Path,
        spec: dict[str, Any],
        *,
        placements: int = 30,
        points: int = 3,
        obs_mode: str = "state",
        max_steps: int | None = None,
        num_envs: int = 2,
        seed: int = 0,
        env_backend: dict[str, Any] | None = None,
        env_kwargs: dict[str, Any] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if not (isinstance(placements, int) and placements >= 1):
            raise ValueError(f"placements={placements!r} is not accepted: give an int >= 1.")
        if not (isinstance(points, int) and points >= 1):
            raise ValueError(f"points={points!r} is not accepted: give an int >= 1.")
        self.task, self.spec, self.placements, self.points = task, spec, placements, points
        self.out_dir = Path(out_dir)
        self.max_steps, self.seed = max_steps, seed
        self._env_args = dict(obs_mode=obs_mode, max_steps=max_steps, num_envs=num_envs, env_backend=env_backend,
                              env_kwargs=env_kwargs)
        self.say = say
        self.candidates: list[Candidate] = []
        self.best_state: dict[str, Any] | None = None
        self._envs: Any = None
        self._load()

    def _load(self) -> None:
        import json

        from libero_tgrpo.policies import load_policy

        path, policy_path = self.out_dir / SELECTION_FILE, self.out_dir / SELECTED_POLICY_FILE
        if not (path.is_file() and policy_path.is_file()):
            return
        record = json.loads(path.read_text())
        self.candidates = [Candidate(**{k: c[k] for k in ("label", "iteration", "placed_rate", "success_rate")})
                           for c in record.get("candidates", [])]
        self.best_state = load_policy(policy_path)[0].state_dict()

    def due(self, done: float) -> bool:
        """Whether ``done`` (fraction of the run, 0-1) reaches a selection point not scored yet."""
        scored = len(self.candidates)  # the start, then one per point reached
        if scored == 0:
            return True
        return done + 1e-9 >= (scored) / self.points and scored <= self.points

    def consider(self, policy: Any, iteration: int, done: float, label: str | None = None) -> dict[str, float]:
        """Score ``policy`` if ``done`` reaches a new selection point; returns the held-out rates it logged
        (``heldout_placed``, ``heldout_success``), or ``{}`` when nothing was due."""
        from libero_tgrpo.files import write_json
        from libero_tgrpo.policies import save_policy

        if not self.due(done):
            return {}
        if self._envs is None:
            self._envs = heldout_envs(self.task, self.placements, **self._env_args)
        res = score_heldout(policy, self.task, self.placements, max_steps=self.max_steps, seed=self.seed,
                            envs=self._envs)
        s = res["summary"]
        name = label or ("start" if iteration == 0 else f"iter_{iteration:04d}")
        cand = Candidate(name, int(iteration), float(s["placed_rate"]), float(s["success_rate"]))
        previous = choose(self.candidates) if self.candidates else None
        self.candidates.append(cand)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if previous is None or cand.rank > previous.rank:  # choose()'s rule: a later one must be strictly better
            self.best_state = copy.deepcopy(policy.state_dict())
            save_policy(policy, self.spec, self.out_dir / SELECTED_POLICY_FILE, stage="selected", task=self.task,
                        iteration=int(iteration), heldout_placed=cand.placed_rate,
                        heldout_success=cand.success_rate)
        write_json(self.out_dir / SELECTION_FILE, self.record())
        if self.say is not None:
            best = choose(self.candidates)
            self.say(f"selection: {name} held-out placed {cand.placed_rate:.0%}, LIBERO success "
                     f"{cand.success_rate:.0%} on {self.placements} placements; best so far {best.label}")
        return {"heldout_placed": cand.placed_rate, "heldout_success": cand.success_rate}

    def record(self) -> dict[str, Any]:
        """What :data:`SELECTION_FILE` holds."""
        best = choose(self.candidates) if self.candidates else None
        return {
            "metric": "placed_rate, then success_rate; the earliest among equals",
            "placements": self.placements,
            "placement_seeds": [HELDOUT_PLACEMENT_OFFSET, HELDOUT_PLACEMENT_OFFSET + self.placements - 1],
            "robot_init_noise": heldout_env_kwargs(self._env_args["env_kwargs"])["robot_init_noise"],
            "points": self.points,
            "candidates": [asdict(c) for c in self.candidates],
            "chosen": None if best is None else asdict(best),
        }

    def apply(self, policy: Any) -> Candidate:
        """Load the chosen candidate's weights into ``policy`` and return the candidate."""
        if not self.candidates or self.best_state is None:
            raise RuntimeError("no candidate was scored: call consider() with the starting policy first.")
        policy.load_state_dict(self.best_state)
        return choose(self.candidates)

    def close(self) -> None:
        if self._envs is not None:
            self._envs.close()
            self._envs = None
