"""Where one sampled action of ``HFVLAPolicy`` spends its time, at OpenVLA-7B scale on one GPU.

Builds the same 7B-shaped LLaVA as ``benchmarks/hf_gpu.py`` (random bf16 weights, LoRA r=32, no download) and,
for each decoding (dynamic KV cache, static KV cache, static with the compiled step, each of these with the
adapter merged into the base weights: ``VARIANTS``) and for the dynamic cache with the LoRA adapter switched off,
splits a batch-M ``sample`` into the processor (``_encode``), the prompt's
forward (prefill) and the decoding steps (the rest), in ms (means over ``--repeats`` calls after two warm-ups,
with the GPU synchronised at each boundary). One call per decoding also runs under ``torch.profiler``; its
operator tables (by GPU time and by CPU time) and the GPU's busy time against the wall time are written too.

Writes ``benchmarks/results/hf_gpu_profile.json`` and ``hf_gpu_profile.txt`` (``--out DIR``: there instead);
``--tiny`` runs the tiny LLaVA in float32 on the CPU (a smoke test; no compiled decoding).

Usage:
    python benchmarks/hf_gpu_profile.py [--batch 8] [--repeats 5] [--variants LIST] [--tiny] [--out DIR]
    python benchmarks/hf_gpu_profile.py --plot PROFILE.json [...] [--out DIR]     # the breakdown as a bar chart
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS  # noqa: E402
from benchmarks.hf_gpu import DECODINGS, build_policy  # noqa: E402
from benchmarks.policy_throughput import INSTRUCTION, SyntheticCameraEnv  # noqa: E402
from libero_tgrpo import files  # noqa: E402
from libero_tgrpo.versions import machine, now, versions  # noqa: E402

#: name -> (``set_decoding`` keywords, LoRA adapter off while sampling): ``hf_gpu.py``'s decodings, and the
#: dynamic cache with the adapter off (the base model) after the first
VARIANTS: dict[str, tuple[dict[str, bool], bool]] = {"dynamic": (DECODINGS["dynamic"], False),
                                                     "dynamic_lora_off": (DECODINGS["dynamic"], True)}
VARIANTS |= {name.replace("-", "_"): (kw, False) for name, kw in DECODINGS.items() if name != "dynamic"}
#: the variants that compile (minutes on a CPU: GPU only)
COMPILED = {name for name, (kw, _) in VARIANTS.items() if kw.get("compile_decoding") or kw.get("compile_prefill")}


def split_sample(policy: Any, obs: Any, instr: list[str], repeats: int, sync: Any) -> dict[str, float]:
    """Mean ms of a ``sample`` call and of its processor and prefill parts (the decoding steps are the rest)."""
    spent = {"encode": 0.0, "prefill": 0.0}
    encode, forward = policy._encode, policy._forward

    def timed_part(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            sync()
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            sync()
            spent[name] += time.perf_counter() - t0
            return out
        return wrapper

    policy._encode, policy._forward = timed_part("encode", encode), timed_part("prefill", forward)
    try:
        for _ in range(2):
            policy.sample(obs, instr)
        spent.update(encode=0.0, prefill=0.0)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            policy.sample(obs, instr)
        sync()
        total = time.perf_counter() - t0
    finally:
        del policy._encode, policy._forward  # back to the class's methods
    row = {"sample_ms": 1e3 * total / repeats, "encode_ms": 1e3 * spent["encode"] / repeats,
           "prefill_ms": 1e3 * spent["prefill"] / repeats}
    row["decode_ms"] = row["sample_ms"] - row["encode_ms"] - row["prefill_ms"]
    return row


def profile_sample(policy: Any, obs: Any, instr: list[str], cuda: bool, sync: Any) -> tuple[dict[str, float], str]:
    """One ``sample`` call under ``torch.profiler``: GPU busy and wall ms, and the operator tables."""
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    sync()
    with torch.profiler.profile(activities=acts) as prof:
        t0 = time.perf_counter()
        policy.sample(obs, instr)
        sync()
        wall = time.perf_counter() - t0
    avg = prof.key_averages()
    gpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]  # kernels, copies
    busy_us, kernels = sum(e.device_time_total for e in gpu), len(gpu)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    text = (avg.table(sort_by=key, row_limit=25) + "\n" + avg.table(sort_by="self_cpu_time_total", row_limit=15))
    return {"profiled_wall_ms": 1e3 * wall, "gpu_busy_ms": busy_us / 1e3, "gpu_kernels": kernels}, text


def plot_breakdown(paths: list[Path], out: Path) -> Path:
    """A stacked bar per decoding (processor, prefill, decoding steps; ms) of one or more recorded profiles."""
    import json

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bars = []
    for path in paths:
        rec = json.loads(Path(path).read_text())
        bars += [(f"{name}\n({Path(path).stem})", row) for name, row in rec["decodings"].items()]
    fig = Figure(figsize=(1.3 * len(bars) + 2, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bottom = [0.0] * len(bars)
    for part, colour in (("encode_ms", "tab:gray"), ("prefill_ms", "tab:blue"), ("decode_ms", "tab:orange")):
        vals = [row[part] for _, row in bars]
        ax.bar(range(len(bars)), vals, bottom=bottom, color=colour, label=part.removesuffix("_ms"))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.plot(range(len(bars)), [row["gpu_busy_ms"] for _, row in bars], "k_", markersize=30, label="GPU busy")
    ax.axhline(150, color="tab:red", linestyle="--", label="goal 150 ms")
    ax.set_xticks(range(len(bars)), [name for name, _ in bars], fontsize=7)
    ax.set_ylabel("ms per batch-8 action")
    ax.set_title(f"sampling one action, 7B-shaped LLaVA, {rec['device']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="rows per sample call (group size M)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per decoding (after two warm-ups)")
    ap.add_argument("--image-size", type=int, default=128, help="camera image side of the synthetic env")
    ap.add_argument("--tiny", action="store_true", help="the tiny LLaVA in float32 on the CPU (smoke test)")
    ap.add_argument("--out", default=None, help="folder for hf_gpu_profile.{json,txt} (default benchmarks/results)")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated decodings to time, of {', '.join(VARIANTS)} (default: all; on the CPU "
                         "all but the compiled ones)")
    ap.add_argument("--plot", nargs="+", default=None, metavar="JSON",
                    help="only draw the breakdown of recorded profiles into hf_gpu_profile.png (in --out)")
    args = ap.parse_args(argv)
    if args.plot:
        print(f"written {plot_breakdown(args.plot, Path(args.out or RESULTS) / 'hf_gpu_profile.png')}")
        return 0
    cuda = not args.tiny
    if cuda and not torch.cuda.is_available():
        print("hf_gpu_profile: no CUDA device; run with --tiny for the CPU smoke test.", file=sys.stderr)
        return 2
    if args.tiny:
        torch.set_num_threads(1)
    out_dir = Path(args.out) if args.out else RESULTS
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    env = gym.vector.SyncVectorEnv([lambda: SyntheticCameraEnv(size=args.image_size)] * args.batch)
    obs, _ = env.reset(seed=0)
    instr = [INSTRUCTION] * args.batch
    results: dict[str, Any] = {"model": "tiny LLaVA (float32)" if args.tiny else "OpenVLA-7B-shaped LLaVA (bf16)",
                               "batch": args.batch, "repeats": args.repeats, "image_size": args.image_size,
                               "device": torch.cuda.get_device_name(0) if cuda else "cpu", "decodings": {}}
    tables: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        policy = build_policy(Path(tmp), args.tiny, "cuda" if cuda else "cpu", checkpointing=False)
        names = args.variants.split(",") if args.variants else [v for v in VARIANTS if cuda or v not in COMPILED]
        unknown = sorted(set(names) - set(VARIANTS))
        if unknown or (not cuda and any(n in COMPILED for n in names)):
            print(f"hf_gpu_profile: --variants {args.variants!r}: choose from {', '.join(VARIANTS)} (compiled ones on "
                  "a GPU only)", file=sys.stderr)
            return 2
        variants = [(n, *VARIANTS[n]) for n in names]
        for name, decoding, lora_off in variants:
            policy.set_decoding(**decoding)
            ctx = policy.model.disable_adapter() if lora_off else contextlib.nullcontext()
            with ctx:
                row = split_sample(policy, obs, instr, args.repeats, sync)
                prof, text = profile_sample(policy, obs, instr, cuda, sync)
            row |= prof
            results["decodings"][name] = row
            tables.append(f"=== {name}: {row}\n{text}")
            print(name, {k: round(v, 2) for k, v in row.items()}, flush=True)
            files.write_json(out_dir / "hf_gpu_profile.json",
                             {**results, "versions": versions(), "machine": machine(), "date": now()})
            (out_dir / "hf_gpu_profile.txt").write_text("\n\n".join(tables))
    env.close()
    print(f"written {out_dir / 'hf_gpu_profile.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
