"""The end-to-end pipeline on LIBERO-Object: demonstrations, SFT, TGRPO, evaluation (uses all three packages).

Command line: ``libero-tgrpo run`` (the main job), ``demos``, ``sft``, ``train``, ``eval``; see
``docs/pipeline.md``. The Python API mirrors it:

Example:
    >>> from libero_tgrpo import PipelineConfig, run_main_job  # doctest: +SKIP
    >>> summary = run_main_job(PipelineConfig(task=4, seed=0))  # doctest: +SKIP

Heavy modules (simulator, torch) are imported on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from libero_tgrpo.paper import PAPER_ALPHAS, PAPER_PPO_AVERAGE, PAPER_TABLE1, paper_alphas

__version__ = "0.1.0"

_LAZY = {
    "DemoSet": "libero_tgrpo.demo_set",
    "DEMO_FORMAT_VERSION": "libero_tgrpo.demo_set",
    "generate_demos": "libero_tgrpo.demo_expert",
    "get_demos": "libero_tgrpo.demos",
    "load_demos": "libero_tgrpo.demo_set",
    "save_demos": "libero_tgrpo.demo_set",
    "read_demos": "libero_tgrpo.demos",
    "export_lerobot": "libero_tgrpo.demo_lerobot",
    "load_lerobot": "libero_tgrpo.demo_lerobot",
    "load_hdf5_demos": "libero_tgrpo.demo_hdf5",
    "SFTConfig": "libero_tgrpo.stage_configs",
    "sft": "libero_tgrpo.sft",
    "token_cross_entropy": "libero_tgrpo.sft",
    "evaluate_benchmark": "libero_tgrpo.evaluation",
    "record_video": "libero_tgrpo.evaluation",
    "make_train_envs": "libero_tgrpo.envs",
    "make_eval_envs": "libero_tgrpo.envs",
    "SharedPlacementVectorWrapper": "libero_tgrpo.envs",
    "build_policy": "libero_tgrpo.policies",
    "load_policy": "libero_tgrpo.policies",
    "save_policy": "libero_tgrpo.policies",
    "METHODS": "libero_tgrpo.config",
    "PipelineConfig": "libero_tgrpo.config",
    "DemoConfig": "libero_tgrpo.stage_configs",
    "EvalConfig": "libero_tgrpo.stage_configs",
    "method_alphas": "libero_tgrpo.config",
    "default_alphas": "libero_tgrpo.config",
    "HELDOUT_ALPHAS": "libero_tgrpo.config",
    "load_config": "libero_tgrpo.options",
    "save_config": "libero_tgrpo.options",
    "command_line": "libero_tgrpo.options",
    "run_main_job": "libero_tgrpo.pipeline",
    "run_demos": "libero_tgrpo.stages",
    "run_sft": "libero_tgrpo.stages",
    "run_train": "libero_tgrpo.stages",
    "run_eval": "libero_tgrpo.stages",
}

__all__ = ["PAPER_ALPHAS", "PAPER_PPO_AVERAGE", "PAPER_TABLE1", "paper_alphas", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'libero_tgrpo' has no attribute {name!r}")
