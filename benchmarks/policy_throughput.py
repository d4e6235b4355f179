"""Benchmark the policies of ``tgrpo.policies`` on this machine: sample / log-prob / update time at batch 8.

* ``VisionLanguageTokenPolicy`` (agentview + wrist 128 px, 29-D state, resized to 64 px inside): sampling,
  log-prob recomputation, one per-step update (forward + backward + AdamW) at batch M = 8, reference log-probs
  of a whole group (M x L = 1600 samples), and one full TGRPO iteration (L = 200 steps, per-step schedule) on a
  synthetic camera env whose step costs nothing, i.e. the policy's share of an iteration.
* ``HFVLAPolicy`` on the tiny LLaVA of ``save_tiny_llava`` (float32, CPU; skipped without transformers/peft):
  sampling with and without the KV cache, log-probs, one update; action tokens per second.

Writes ``benchmarks/results/policy_throughput.{json,md}`` with versions and machine.

Usage:
    python benchmarks/policy_throughput.py [--threads 1] [--repeats 20] [--max-steps 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tgrpo  # noqa: E402
from benchmarks._common import RESULTS, write_json  # noqa: E402
from tgrpo.policies import VisionLanguageTokenPolicy  # noqa: E402

INSTRUCTION = "pick up the bbq sauce and place it in the basket"
#: Env time of one group, for comparison: 8 x 200 steps of LIBERO with two 128 px cameras at ~13 steps/s on
#: 2 cores (SPEC §6: AsyncVectorEnv, two workers).
ENV_SECONDS_PER_GROUP = 8 * 200 / 13.3


class SyntheticCameraEnv(gym.Env):
    """Random 128 px agentview + wrist images and a 29-D state; free to step, never succeeds."""

    def __init__(self, size: int = 128, state_dim: int = 29) -> None:
        img = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(
            {
                "agentview": img,
                "wrist": img,
                "state": gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.size, self.state_dim = size, state_dim

    def _obs(self):
        r = self.np_random
        return {
            "agentview": r.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8),
            "wrist": r.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8),
            "state": r.normal(size=self.state_dim).astype(np.float32),
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {"is_success": False, "instruction": INSTRUCTION}

    def step(self, action):
        return self._obs(), float(action[0]), False, False, {"is_success": False, "instruction": INSTRUCTION}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def policy_timings(policy, obs, instr, repeats: int) -> dict[str, float]:
    """Sample / log-prob / update / reference timings (ms) of a policy on one batch."""
    opt = torch.optim.AdamW([p for p in policy.trainable_parameters() if p.requires_grad], lr=1e-5)
    tokens, _ = policy.sample(obs, instr)

    def update():
        lp, _ = policy.log_probs(obs, instr, tokens)
        opt.zero_grad()
        (-lp.mean()).backward()
        opt.step()

    def forward():
        with torch.no_grad():
            policy.log_probs(obs, instr, tokens)

    return {
        "sample_ms": 1e3 * timed(lambda: policy.sample(obs, instr), repeats),
        "log_probs_ms": 1e3 * timed(forward, repeats),
        "update_ms": 1e3 * timed(update, repeats),
        "ref_log_probs_ms": 1e3 * timed(lambda: policy.ref_log_probs(obs, instr, tokens), repeats),
    }


def bench_vision(args: argparse.Namespace) -> dict:
    env = gym.vector.SyncVectorEnv([SyntheticCameraEnv] * 8)
    policy = VisionLanguageTokenPolicy.from_space(env.single_observation_space, image_size=args.image_size)
    obs, _ = env.reset(seed=0)
    out: dict = {
        "policy": f"VisionLanguageTokenPolicy(image_size={args.image_size}, cameras=agentview+wrist, state 29)",
        "parameters": sum(p.numel() for p in policy.trainable_parameters()),
        "batch": 8,
        "input": "2 x 128x128x3 uint8 + 29-D state",
        **policy_timings(policy, obs, [INSTRUCTION] * 8, args.repeats),
    }
    group = {k: np.repeat(v, 1600 // 8, axis=0) for k, v in obs.items()}
    tokens = torch.randint(0, 256, (1600, 7))
    t0 = time.perf_counter()
    for s in range(0, 1600, 1024):  # the trainer's reference chunks
        sl = slice(s, s + 1024)
        policy.ref_log_probs(
            {k: v[sl] for k, v in group.items()}, [INSTRUCTION] * len(tokens[sl]), tokens[sl]
        )
    out["ref_log_probs_group_1600_s"] = time.perf_counter() - t0

    cfg = tgrpo.TGRPOConfig(
        max_steps=args.max_steps,
        iterations=1,
        output_dir=tempfile.mkdtemp(prefix="policy_bench_"),
        log_formats=(),
        checkpoint_interval=0,
        progress_bar=False,
        plot=False,
    )
    row = tgrpo.train(env, policy, cfg).history[0]
    out["iteration"] = {
        "num_envs": 8,
        "steps": int(row["charts/group_length"]),
        "schedule": "per_step",
        **{k.split("/")[1]: float(row[k]) for k in row if k.startswith("time/")},
        "policy_s": float(row["time/sample_s"] + row["time/forward_s"] + row["time/update_s"]),
    }
    out["env_seconds_per_group_reference"] = ENV_SECONDS_PER_GROUP
    return out


def bench_hf(args: argparse.Namespace) -> dict | None:
    try:
        from tgrpo.policies import HFVLAPolicy, save_tiny_llava
    except ImportError as exc:  # transformers / peft not installed
        return {"skipped": str(exc)}
    path = save_tiny_llava(tempfile.mkdtemp(prefix="tiny_vla_"))
    policy = HFVLAPolicy.from_pretrained(path, dtype="float32")
    rng = np.random.default_rng(0)
    obs = {"agentview": rng.integers(0, 256, (8, 128, 128, 3), dtype=np.uint8)}
    instr = [INSTRUCTION] * 8
    out: dict = {
        "model": "tiny LLaVA (CLIP 2x32 + Llama 2x64, 32 px, 16 image tokens), float32, LoRA r=32 all-linear",
        "base_parameters": sum(p.numel() for p in policy.model.parameters() if not p.requires_grad),
        "lora_parameters": sum(p.numel() for p in policy.trainable_parameters()),
        "batch": 8,
        "kv_cache": policy_timings(policy, obs, instr, args.repeats),
    }
    policy.use_cache = False
    out["no_cache_sample_ms"] = 1e3 * timed(lambda: policy.sample(obs, instr), args.repeats)
    out["action_tokens_per_s"] = 8 * 7 / (out["kv_cache"]["sample_ms"] / 1e3)
    out["action_tokens_per_s_no_cache"] = 8 * 7 / (out["no_cache_sample_ms"] / 1e3)
    for pkg in ("transformers", "peft", "tokenizers"):
        out[f"{pkg}_version"] = metadata.version(pkg)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for tiny nets)"
    )
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median reported)")
    ap.add_argument("--max-steps", type=int, default=200, help="steps of the full-iteration measurement")
    ap.add_argument("--image-size", type=int, default=64, help="the vision policy's internal image size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vision = bench_vision(args)
    hf = bench_hf(args)
    payload = {
        "benchmark": "policy_throughput",
        "torch_threads": args.threads,
        "vision": vision,
        "hf_tiny": hf,
    }
    path = write_json("policy_throughput", payload)

    it = vision["iteration"]
    lines = [
        "# Policy throughput",
        "",
        f"torch {torch.__version__}, {args.threads} thread(s); median of {args.repeats} calls; batch 8.",
        "",
        f"## {vision['policy']}",
        "",
        f"{vision['parameters']:,} parameters; input {vision['input']}.",
        "",
        "| sample ms | log-probs ms (no grad) | update ms (fwd+bwd+AdamW) | ref log-probs ms |",
        "|---|---|---|---|",
        f"| {vision['sample_ms']:.1f} | {vision['log_probs_ms']:.1f} | {vision['update_ms']:.1f} | "
        f"{vision['ref_log_probs_ms']:.1f} |",
        "",
        f"Reference log-probs of a whole group (1600 samples): {vision['ref_log_probs_group_1600_s']:.2f} s.",
        "",
        f"One TGRPO iteration, M = 8, L = {it['steps']}, per-step schedule, on a synthetic env that costs nothing "
        f"to step: sampling {it['sample_s']:.1f} s, forward {it['forward_s']:.1f} s, update {it['update_s']:.1f} s; "
        f"policy total {it['policy_s']:.1f} s (iteration {it['iteration_s']:.1f} s). For comparison, the LIBERO "
        f"env with two 128 px cameras needs about {ENV_SECONDS_PER_GROUP:.0f} s for the same 1600 steps on these "
        "2 cores (SPEC §6).",
    ]
    if hf and "skipped" not in hf:
        kv = hf["kv_cache"]
        lines += [
            "",
            "## HFVLAPolicy on the tiny LLaVA (CPU, float32)",
            "",
            f"{hf['model']}; {hf['base_parameters']:,} base + {hf['lora_parameters']:,} LoRA parameters; "
            f"transformers {hf['transformers_version']}, peft {hf['peft_version']}.",
            "",
            "| sample ms (KV cache) | sample ms (no cache) | log-probs ms | update ms | ref log-probs ms | "
            "action tokens/s (cache) | (no cache) |",
            "|---|---|---|---|---|---|---|",
            f"| {kv['sample_ms']:.1f} | {hf['no_cache_sample_ms']:.1f} | {kv['log_probs_ms']:.1f} | "
            f"{kv['update_ms']:.1f} | {kv['ref_log_probs_ms']:.1f} | {hf['action_tokens_per_s']:.0f} | "
            f"{hf['action_tokens_per_s_no_cache']:.0f} |",
            "",
            "The tiny model measures the adapter's overhead (processor, prompt building, 7 decoding steps), not a "
            "7B model's speed; no GPU was used.",
        ]
    md = RESULTS / "policy_throughput.md"
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written {path} and {md}")


if __name__ == "__main__":
    main()
