"""Shared helpers of the benchmark scripts: where results go, stamped with the machine and versions; the in-order
runner of resumable plans; :class:`SFTSetting`, the SFT regimes of the tuning sweep and the paper table."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libero_tgrpo import files
from libero_tgrpo.stage_configs import DEMO_UNTIL, EXPERT_CLOSE_STEPS, EXPERT_LIFT
from libero_tgrpo.versions import machine, now, versions

RESULTS = Path(__file__).resolve().parent / "results"


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus versions, machine and timestamp to ``results/<name>.json``."""
    payload = {
        **payload,
        "versions": versions(),
        "machine": machine(),
        "date": now(),
    }
    return files.write_json(RESULTS / f"{name}.json", payload)


def parse_ints(text: str) -> list[int]:
    """``"1-10"``, ``"2,4,10"`` or a mix (``"0-2,7"``) as a list of ints."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def run_in_order(
    todo: Sequence[Any],
    run: Callable[[Any], dict[str, Any]],
    record: Callable[[Any, dict[str, Any] | None, str | None], None],
    *,
    label: Callable[[Any], str],
    max_n: int | None = None,
    time_budget_min: float | None = None,
) -> int:
    """Run the units of a resumable plan one after another in this process; returns how many were started.

    After each unit, ``record(unit, payload, None)``; for a unit that raised, its traceback is printed and
    ``record(unit, None, "Type: message")``, and the plan goes on. No unit starts after ``max_n`` units or
    ``time_budget_min`` minutes (the same command continues the plan).
    """
    start = time.perf_counter()
    ran = 0
    for unit in todo:
        if max_n is not None and ran >= max_n:
            break
        if time_budget_min is not None and time.perf_counter() - start > 60 * time_budget_min:
            print("time budget reached; run the same command again to continue", flush=True)
            break
        print(f"--- {label(unit)}", flush=True)
        ran += 1
        try:
            payload = run(unit)
        except Exception as e:  # noqa: BLE001 - a failed unit is recorded and the plan goes on
            traceback.print_exc()
            record(unit, None, f"{type(e).__name__}: {e}")
            continue
        record(unit, payload, None)
    return ran


@dataclass(frozen=True)
class SFTSetting:
    """One point of the SFT regime study: how much the SFT policy is trained (demonstrations, epochs, widths)."""

    num_demos: int
    epochs: int
    hidden: tuple[int, ...]
    demo_until: str = DEMO_UNTIL
    """Where the expert's episodes end (``DemoConfig.until``); units written before it existed read as
    ``"is_placed"``, the default of their time (:meth:`of`)."""
    demo_noise: float = 0.0
    """Standard deviation of the expert's position-action noise (``DemoConfig.demo_noise``); 0 is the
    deterministic expert (and what units written before it existed used)."""
    expert_close_steps: int = EXPERT_CLOSE_STEPS
    """The expert's ``close_steps`` (``DemoConfig.expert_close_steps``); the default, 6, is what units written
    before it existed used."""
    expert_lift: str = EXPERT_LIFT
    """The expert's lift rule (``DemoConfig.expert_lift``); the default, ``"timer"``, is what units written before
    it existed used."""

    @classmethod
    def main_job(cls) -> SFTSetting:
        """The main job's SFT (``libero_tgrpo.PipelineConfig`` defaults): the weak regime."""
        from libero_tgrpo.config import PipelineConfig

        return cls.of_config(PipelineConfig())

    @classmethod
    def of_config(cls, cfg: Any) -> SFTSetting:
        """The SFT setting a ``libero_tgrpo.PipelineConfig`` trains with."""
        return cls(cfg.demos.num_demos, cfg.sft.epochs, tuple(cfg.hidden), cfg.demos.until, cfg.demos.demo_noise,
                   cfg.demos.expert_close_steps, cfg.demos.expert_lift)

    @classmethod
    def of(cls, record: dict[str, Any]) -> SFTSetting:
        """The setting of its ``asdict`` form (a unit's ``sft_setting``)."""
        return cls(int(record["num_demos"]), int(record["epochs"]), tuple(int(h) for h in record["hidden"]),
                   record.get("demo_until", "is_placed"), float(record.get("demo_noise", 0.0)),
                   int(record.get("expert_close_steps", EXPERT_CLOSE_STEPS)),
                   str(record.get("expert_lift", EXPERT_LIFT)))

    @property
    def key(self) -> str:
        """``d100_e300_h128x128``; ``_u-success`` appended for demonstrations that end at LIBERO's success,
        ``_nz0.2`` for an expert with action noise 0.2, ``_cs0`` for an expert with ``close_steps=0``,
        ``_lift-still`` for an expert with the ``"still"`` lift rule."""
        end = "" if self.demo_until == "is_placed" else "_u-" + self.demo_until.removeprefix("is_")
        noise = f"_nz{self.demo_noise:g}" if self.demo_noise else ""
        close = "" if self.expert_close_steps == EXPERT_CLOSE_STEPS else f"_cs{self.expert_close_steps}"
        close += "" if self.expert_lift == EXPERT_LIFT else f"_lift-{self.expert_lift}"
        return f"d{self.num_demos}_e{self.epochs}_h{'x'.join(map(str, self.hidden))}{end}{noise}{close}"

    @property
    def size(self) -> tuple[int, int, int, float, bool]:
        """What "smallest" means in :func:`benchmarks.sft_study.choose_sft_setting`: demonstrations, then epochs,
        then hidden units, then the expert's noise, then the default expert before another ``close_steps`` or lift
        rule."""
        return (self.num_demos, self.epochs, sum(self.hidden), self.demo_noise,
                self.expert_close_steps != EXPERT_CLOSE_STEPS or self.expert_lift != EXPERT_LIFT)

    def describe(self) -> str:
        """``100 demonstrations, 300 epochs, hidden 128x128, demonstrations through the release`` (or ``until
        LIBERO's success``; and ``, expert noise 0.2``, ``, expert close_steps 0``, ``, expert lift rule still``)."""
        end = ", demonstrations " + ("through the release" if self.demo_until == "is_placed" else "until LIBERO's success")
        end += f", expert noise {self.demo_noise:g}" if self.demo_noise else ""
        end += "" if self.expert_close_steps == EXPERT_CLOSE_STEPS else f", expert close_steps {self.expert_close_steps}"
        end += "" if self.expert_lift == EXPERT_LIFT else f", expert lift rule {self.expert_lift}"
        return f"{self.num_demos} demonstrations, {self.epochs} epochs, hidden {'x'.join(map(str, self.hidden))}{end}"

    def overrides(self) -> dict[str, Any]:
        """``PipelineConfig.replace`` changes of the setting."""
        return {"demos.num_demos": self.num_demos, "sft.epochs": self.epochs, "hidden": tuple(self.hidden),
                "demos.until": self.demo_until, "demos.demo_noise": self.demo_noise,
                "demos.expert_close_steps": self.expert_close_steps, "demos.expert_lift": self.expert_lift}
