"""Time ``HFVLAPolicy`` at OpenVLA-7B scale on one GPU, with a model built from a config (no download).

The model is a LLaVA with OpenVLA-7B's shapes: a Llama-2-7B decoder (hidden 4096, 32 layers, MLP 11008,
vocabulary 32064) and a CLIP ViT-L/14 vision tower at 224 px, random bf16 weights, LoRA r=32 alpha=16 on all
linear layers. The processor is the tiny one of ``save_tiny_llava`` (224 px); action ids are the last 256 of a
32000-id base vocabulary, as in OpenVLA. Timed at batch M (default 8): sampling one action (7 tokens),
log-probs, reference log-probs, one update (log-probs + backward + AdamW), and one TGRPO iteration (per-step
schedule, L steps) on a synthetic camera env whose step costs nothing; with and without gradient
checkpointing (``--checkpointing``), with the decoding of ``--decoding`` (``HFVLAPolicy.set_decoding``: the dynamic
KV cache by default, the static cache, its compiled step, merged sampling). In the run without checkpointing,
sampling is also timed on the static KV cache and with its compiled decoding step (the compiled step's first
call, which compiles, is reported apart). Peak GPU memory, the GPU's name and the versions are recorded; each
number is printed as it lands and the JSON is written after each run.

Writes ``benchmarks/results/hf_gpu.json`` (``--tiny``: ``hf_gpu_tiny.json``; ``--out``: elsewhere).
``--tiny`` runs the same code on the tiny LLaVA in float32 on the CPU, on one thread: the smoke test CI runs.

Recorded on an NVIDIA H200: ``benchmarks/results/hf_gpu/`` (its README gives each run's command);
``benchmarks/hf_gpu_profile.py`` splits a sampled action's time into its parts.

Usage:
    python benchmarks/hf_gpu.py [--batch 8] [--steps 12] [--repeats 5] [--decoding NAME] [--checkpointing both|on|off]
                                [--tiny] [--out FILE]
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
             "merged": {"merged_sampling": True}, "merged-compiled": {"merged_sampling": True, "compile_decoding": True}}
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
    policy: Any, args: argparse.Namespace, out_dir: Path, device: str, decodings: bool = False
) -> dict[str, Any]:
    """Timings (ms, medians) and peak memory of one policy; with ``decodings``, sampling also on the static KV
    cache and with the compiled decoding step (``--compile``)."""
    cuda = device.startswith("cuda")
    policy.set_decoding(**DECODINGS[args.decoding])  # for the sampling timings and the TGRPO iteration
    env = gym.vector.SyncVectorEnv([lambda: SyntheticCameraEnv(size=args.image_size)] * args.batch)
    obs, _ = env.reset(seed=0)
    instr = [INSTRUCTION] * args.batch
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-5)
    tokens, _ = policy.sample(obs, instr)

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
    row: dict[str, Any] = {}

    def record(key: str, value: float) -> None:  # each number is printed as it lands (a run can be cut short)
        row[key] = value
        print(f"  {key}: {value:.3f}", flush=True)

    record("sample_ms", 1e3 * timed(sample, args.repeats))
    record("log_probs_ms", 1e3 * timed(forward, args.repeats))
    record("ref_log_probs_ms", 1e3 * timed(ref, args.repeats))
    record("update_ms", 1e3 * timed(update, args.repeats))
    cfg = tgrpo.TGRPOConfig(iterations=1, max_steps=args.steps, lr=1e-5, output_dir=str(out_dir),
                            progress_bar=False, plot=False, log_formats=("jsonl",), checkpoint_interval=0)
    t0 = time.perf_counter()
    tgrpo.train(env, policy, cfg)
    sync()
    record("tgrpo_iteration_s", time.perf_counter() - t0)
    if cuda:
        record("peak_memory_gib", torch.cuda.max_memory_allocated() / 2**30)
    row["trainable_parameters"] = sum(p.numel() for p in policy.trainable_parameters())
    if decodings:  # last, as compiling can take long: the static KV cache, then its compiled step (timed apart)
        variants = [("static", False)] + ([("compiled", True)] if args.compile else [])
        for name, compiled in variants:
            policy.set_decoding(static_cache=True, compile_decoding=compiled)
            t0 = time.perf_counter()
            sample()
            record(f"sample_{name}_first_s", time.perf_counter() - t0)
            record(f"sample_{name}_ms", 1e3 * timed(sample, args.repeats))
        policy.set_decoding()
    env.close()
    return row


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
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time sampling with the compiled decoding step (default: on a GPU only; compiling the "
                         "tiny model on a CPU takes minutes)")
    args = ap.parse_args(argv)
    device = "cpu" if args.tiny else "cuda"
    if args.compile is None:
        args.compile = not args.tiny
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
        for checkpointing in modes:  # the CUDA default first
            key = "gradient_checkpointing" if checkpointing else "no_checkpointing"
            print(key, flush=True)
            policy = build_policy(Path(tmp), args.tiny, device, checkpointing)
            results["runs"][key] = measure(policy, args, Path(tmp) / key, device, decodings=not checkpointing)
            path = write()
            del policy
            if device == "cuda":
                torch.cuda.empty_cache()
    print(f"written {path} (results dir {RESULTS})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
