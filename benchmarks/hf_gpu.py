"""Time ``HFVLAPolicy`` at OpenVLA-7B scale on one GPU, with a model built from a config (no download).

The model is a LLaVA with OpenVLA-7B's shapes: a Llama-2-7B decoder (hidden 4096, 32 layers, MLP 11008,
vocabulary 32064) and a CLIP ViT-L/14 vision tower at 224 px, random bf16 weights, LoRA r=32 alpha=16 on all
linear layers. The processor is the tiny one of ``save_tiny_llava`` (224 px); action ids are the last 256 of a
32000-id base vocabulary, as in OpenVLA. Timed at batch M (default 8): sampling one action (7 tokens),
log-probs, reference log-probs, one update (log-probs + backward + AdamW), and one TGRPO iteration (per-step
schedule, L steps) on a synthetic camera env whose step costs nothing; with and without gradient
checkpointing (``--checkpointing``), with the decoding of ``--decoding`` (``HFVLAPolicy.set_decoding``: the dynamic
KV cache by default, the static cache, its compiled step, merged sampling, ``fast``: all of these and the compiled
prompt forward). In the first run, sampling is then also timed under each decoding of ``--also``: its first call
(which compiles) apart, the processor / prefill / decoding-steps split, a call right after an optimizer step (the
merge, for merged sampling), its greedy tokens' agreement with the dynamic cache's, and a TGRPO iteration. Peak
GPU memory, the GPU's name and the versions are recorded; each number is printed as it lands and the JSON is
written after each run.

Writes ``benchmarks/results/hf_gpu.json`` (``--tiny``: ``hf_gpu_tiny.json``; ``--out``: elsewhere).
``--tiny`` runs the same code on the tiny LLaVA in float32 on the CPU, on one thread: the smoke test CI runs.

Recorded on an NVIDIA H200: ``benchmarks/results/hf_gpu/`` (its README gives each run's command);
``benchmarks/hf_gpu_profile.py`` splits a sampled action's time into its parts.

Usage:
    python benchmarks/hf_gpu.py [--batch 8] [--steps 12] [--repeats 5] [--decoding NAME] [--checkpointing both|on|off]
                                [--also NAME,...] [--tiny] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tgrpo  # noqa: E402
from benchmarks._common import RESULTS, write_json  # noqa: E402
from benchmarks.policy_throughput import INSTRUCTION, SyntheticCameraEnv, timed  # noqa: E402
from libero_tgrpo import files  # noqa: E402

#: OpenVLA-7B's shapes (Llama-2-7B decoder, CLIP ViT-L/14 at 224 px).
OPENVLA_7B_SHAPES = {
    "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 2048},
    "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
               "image_size": 224, "patch_size": 14},
}
#: ``--decoding`` -> ``HFVLAPolicy.set_decoding`` keywords
DECODINGS = {"dynamic": {}, "static": {"static_cache": True}, "compiled": {"compile_decoding": True},
             "merged": {"merged_sampling": True}, "merged-compiled": {"merged_sampling": True, "compile_decoding": True},
             "fast": {"merged_sampling": True, "compile_decoding": True, "compile_prefill": True}}
#: OpenVLA's base vocabulary (its logits have 32064 entries; the action ids end at 32000).
OPENVLA_VOCAB_SIZE = 32000


def build_policy(tmp: Path, tiny: bool, device: str, checkpointing: bool) -> Any:
    """The policy under test: the 7B-shaped LLaVA in bf16 on ``device``, or the tiny LLaVA in float32."""
    from tgrpo.policies import HFVLAPolicy, LoRASettings, save_tiny_llava

    if tiny:
        path = tmp / "tiny"
        if not path.exists():  # written once, loaded by both runs
            save_tiny_llava(path)
        return HFVLAPolicy.from_pretrained(path, dtype="float32", device=device, lora=LoRASettings(r=8, alpha=16),
                                           gradient_checkpointing=checkpointing)
    from transformers import (
        AutoProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    path = tmp / "processor"
    if not path.exists():
        save_tiny_llava(path, image_size=224, patch_size=14)
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    text = LlamaConfig(**OPENVLA_7B_SHAPES["text"], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    config = LlavaConfig(vision_config=CLIPVisionConfig(**OPENVLA_7B_SHAPES["vision"]), text_config=text,
                         image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = LlavaForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(previous)
    return HFVLAPolicy(model, processor, lora=LoRASettings(r=32, alpha=16), action_vocab_size=OPENVLA_VOCAB_SIZE,
                       gradient_checkpointing=checkpointing)


def measure(
    policy: Any, args: argparse.Namespace, out_dir: Path, device: str, also: list[str] | tuple[str, ...] = (),
    row: dict[str, Any] | None = None, save: Any = None,
) -> dict[str, Any]:
    """Timings (ms, medians) and peak memory of one policy under ``--decoding``, then the sampling of each
    decoding of ``also`` (:func:`time_decoding`), into ``row``; ``save()`` is called after each number (a run cut
    short keeps what it measured)."""
    cuda = device.startswith("cuda")
    env = gym.vector.SyncVectorEnv([lambda: SyntheticCameraEnv(size=args.image_size)] * args.batch)
    obs, _ = env.reset(seed=0)
    instr = [INSTRUCTION] * args.batch
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-5)
    reference = policy.sample(obs, instr, temperature=0.0)[0]  # greedy on the dynamic cache: what others must give
    policy.set_decoding(**DECODINGS[args.decoding])  # for the sampling timings and the TGRPO iteration
    agreement = float((policy.sample(obs, instr, temperature=0.0)[0] == reference).float().mean())
    tokens, _ = policy.sample(obs, instr)
    gap = logp_gap(policy, obs, instr)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def update() -> None:
        lp, _ = policy.log_probs(obs, instr, tokens)
        opt.zero_grad()
        (-lp.mean()).backward()
        opt.step()
        sync()

    def forward() -> None:
        with torch.no_grad():
            policy.log_probs(obs, instr, tokens)
        sync()

    def ref() -> None:
        policy.ref_log_probs(obs, instr, tokens)
        sync()

    def sample() -> None:
        policy.sample(obs, instr)
        sync()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    row = {} if row is None else row
    save = save or (lambda: None)

    def record(key: str, value: float) -> None:  # each number is printed and saved as it lands
        row[key] = value
        print(f"  {key}: {value:.3f}", flush=True)
        save()

    record("sample_ms", 1e3 * timed(sample, args.repeats))
    record("log_probs_ms", 1e3 * timed(forward, args.repeats))
    record("ref_log_probs_ms", 1e3 * timed(ref, args.repeats))
    record("update_ms", 1e3 * timed(update, args.repeats))

    runs = iter(range(1 + len(also)))

    def iteration() -> float:  # each in its own output directory
        cfg = tgrpo.TGRPOConfig(iterations=1, max_steps=args.steps, lr=1e-5, output_dir=str(out_dir / str(next(runs))),
                                progress_bar=False, plot=False, log_formats=("jsonl",), checkpoint_interval=0)
        t0 = time.perf_counter()
        tgrpo.train(env, policy, cfg)
        sync()
        return time.perf_counter() - t0

    record("tgrpo_iteration_s", iteration())
    if cuda:
        record("peak_memory_gib", torch.cuda.max_memory_allocated() / 2**30)
    row["trainable_parameters"] = sum(p.numel() for p in policy.trainable_parameters())
    row["greedy_agreement"], row["logp_gap_max"] = agreement, gap
    row["also"] = {}
    for name in also:  # last, as compiling can take long; one failing decoding does not stop the others
        print(f"  also {name}", flush=True)
        try:
            policy.set_decoding()  # the reference: greedy on the dynamic cache with the weights as they are now
            reference = policy.sample(obs, instr, temperature=0.0)[0]
            row["also"][name] = time_decoding(policy, name, obs, instr, args.repeats, sync, update, reference)
            row["also"][name]["tgrpo_iteration_s"] = iteration()
        except Exception as exc:  # recorded, not raised: the run's other numbers stay
            row["also"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        print(f"    {row['also'][name]}", flush=True)
        save()
        if cuda:
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    env.close()
    return row


def logp_gap(policy: Any, obs: Any, instr: list[str]) -> float:
    """Largest |sampled log-prob - the update's teacher-forced log-prob| of one sampled batch's tokens (nats): a
    decoding that conditions on the wrong positions shows here, where greedy agreement with random weights (whose
    action logits are near ties) cannot tell."""
    tokens, logp = policy.sample(obs, instr)
    with torch.no_grad():
        lp, _ = policy.log_probs(obs, instr, tokens)
    return float((lp.float().cpu() - logp).abs().max())


def time_decoding(
    policy: Any, name: str, obs: Any, instr: list[str], repeats: int, sync: Any, update: Any, reference: Any
) -> dict[str, Any]:
    """Sampling under the decoding ``name``: the first call (which compiles, where it does), the share of its
    greedy tokens equal to ``reference`` (the dynamic cache's at the same weights; bf16 rounding differs between
    decodings), the mean of ``repeats`` calls split into processor, prefill and decoding steps
    (``hf_gpu_profile.split_sample``), a call right after an optimizer step (with merged sampling: the merge),
    and one call under ``torch.profiler`` (``hf_gpu_profile.profile_sample``: GPU busy time and kernels; its
    operator tables are printed)."""
    from benchmarks.hf_gpu_profile import profile_sample, split_sample

    policy.set_decoding(**DECODINGS[name])
    t0 = time.perf_counter()
    greedy = policy.sample(obs, instr, temperature=0.0)[0]
    sync()
    row: dict[str, Any] = {"first_call_s": time.perf_counter() - t0}
    row["greedy_agreement"] = float((greedy == reference).float().mean())
    row["logp_gap_max"] = logp_gap(policy, obs, instr)
    row |= split_sample(policy, obs, instr, repeats, sync)
    after = []
    for _ in range(3):
        update()
        t0 = time.perf_counter()
        policy.sample(obs, instr)
        sync()
        after.append(time.perf_counter() - t0)
    row["sample_after_update_ms"] = 1e3 * float(sorted(after)[1])
    prof, tables = profile_sample(policy, obs, instr, torch.cuda.is_available(), sync)  # GPU busy vs wall time
    print(tables, flush=True)
    return row | prof


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="group size M (rows per call)")
    ap.add_argument("--steps", type=int, default=12, help="steps L of the timed TGRPO iteration")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (after one warm-up)")
    ap.add_argument("--image-size", type=int, default=128, help="camera image side of the synthetic env")
    ap.add_argument("--tiny", action="store_true", help="the tiny LLaVA in float32 on the CPU (smoke test)")
    ap.add_argument("--out", default=None, help="JSON file to write (default benchmarks/results/hf_gpu[_tiny].json)")
    ap.add_argument("--decoding", choices=sorted(DECODINGS), default="dynamic",
                    help="how the policy samples in the timed sampling and TGRPO iteration (set_decoding)")
    ap.add_argument("--checkpointing", choices=("both", "on", "off"), default="both",
                    help="runs with gradient checkpointing on, off, or both (default)")
    ap.add_argument("--also", default="",
                    help="comma-separated decodings whose sampling is also timed, in the first run, after its "
                         f"measurements (of {', '.join(DECODINGS)}; the compiled ones take minutes on a CPU)")
    args = ap.parse_args(argv)
    device = "cpu" if args.tiny else "cuda"
    also = [a for a in args.also.split(",") if a]
    if set(also) - set(DECODINGS):
        print(f"hf_gpu: --also {args.also!r}: choose from {', '.join(DECODINGS)}", file=sys.stderr)
        return 2
    if args.tiny:
        # the tiny model's matrices gain nothing from intra-op threads, and on a shared CPU their spinning
        # costs several times the work itself (50 s -> 13 s for the smoke test on a loaded 2-core machine)
        torch.set_num_threads(1)
    if not args.tiny and not torch.cuda.is_available():
        print("hf_gpu: no CUDA device; run with --tiny for the CPU smoke test.", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"model": "tiny LLaVA (float32)" if args.tiny else "OpenVLA-7B-shaped LLaVA (bf16)",
                               "shapes": None if args.tiny else OPENVLA_7B_SHAPES, "batch": args.batch,
                               "steps": args.steps, "repeats": args.repeats, "decoding": args.decoding,
                               "image_size": args.image_size,
                               "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "runs": {}}
    name = "hf_gpu_tiny" if args.tiny else "hf_gpu"

    def write() -> Path:  # after each run, so that a run cut short keeps what was measured
        if args.out is None:
            return write_json(name, results)
        from libero_tgrpo.versions import machine, now, versions

        return files.write_json(Path(args.out), {**results, "versions": versions(), "machine": machine(),
                                                 "date": now()})

    with tempfile.TemporaryDirectory() as tmp:
        modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.checkpointing]
        for i, checkpointing in enumerate(modes):  # the CUDA default first
            key = "gradient_checkpointing" if checkpointing else "no_checkpointing"
            print(key, flush=True)
            t0 = time.perf_counter()
            policy = build_policy(Path(tmp), args.tiny, device, checkpointing)
            results["runs"][key] = {"build_s": time.perf_counter() - t0}
            measure(policy, args, Path(tmp) / key, device, also=also if i == 0 else (), row=results["runs"][key],
                    save=write)
            path = write()
            del policy
            if device == "cuda":
                torch.cuda.empty_cache()
    print(f"written {path} (results dir {RESULTS})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
