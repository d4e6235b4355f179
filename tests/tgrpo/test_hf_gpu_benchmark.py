"""benchmarks/hf_gpu.py runs end to end with --tiny on the CPU (its GPU run is not part of CI)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft", reason="needs the hf extra", exc_type=ModuleNotFoundError)
pytest.importorskip("libero_tgrpo.versions", reason="the benchmark records versions with libero_tgrpo")

ROOT = Path(__file__).resolve().parents[2]


def test_hf_gpu_tiny_smoke(tmp_path):
    out = tmp_path / "hf_gpu_tiny.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hf_gpu.py"), "--tiny", "--batch", "2", "--steps", "2",
         "--repeats", "1", "--image-size", "32", "--also", "static,merged", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["runs"]) == {"no_checkpointing", "gradient_checkpointing"}
    for row in res["runs"].values():
        assert all(row[k] > 0 for k in ("sample_ms", "log_probs_ms", "ref_log_probs_ms", "update_ms",
                                         "tgrpo_iteration_s"))
    first = res["runs"]["gradient_checkpointing"]  # --also: timed in the first run only
    assert list(first["also"]) == ["static", "merged"] and res["runs"]["no_checkpointing"]["also"] == {}
    for row in first["also"].values():
        assert row["sample_ms"] > 0 and row["sample_after_update_ms"] > 0 and row["tgrpo_iteration_s"] > 0
        assert abs(row["encode_ms"] + row["prefill_ms"] + row["decode_ms"] - row["sample_ms"]) < 1e-6
        assert row["greedy_agreement"] == 1.0  # float32 on the CPU: the same greedy tokens as the dynamic cache
        assert row["logp_gap_max"] < 1e-4  # sampled log-probs are the update's, up to float32 rounding
    assert res["device"] == "cpu" and "versions" in res
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hf_gpu.py"), "--tiny", "--also", "warp"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and "'warp'" in bad.stderr and "merged-compiled" in bad.stderr


def test_hf_gpu_profile_tiny_smoke_and_plot(tmp_path):
    """benchmarks/hf_gpu_profile.py splits a sampled action into processor, prefill and decoding steps (parts that
    add up to the total) for the decodings asked for, draws them, and refuses an unknown decoding by name."""
    script = str(ROOT / "benchmarks" / "hf_gpu_profile.py")
    proc = subprocess.run(
        [sys.executable, script, "--tiny", "--batch", "2", "--repeats", "1", "--image-size", "32",
         "--variants", "dynamic,merged", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "hf_gpu_profile.json").read_text())
    assert list(res["decodings"]) == ["dynamic", "merged"] and res["device"] == "cpu"
    for row in res["decodings"].values():
        assert row["encode_ms"] > 0 and row["prefill_ms"] > 0 and row["decode_ms"] > 0
        assert abs(row["encode_ms"] + row["prefill_ms"] + row["decode_ms"] - row["sample_ms"]) < 1e-6
    assert "=== merged" in (tmp_path / "hf_gpu_profile.txt").read_text()
    plot = subprocess.run([sys.executable, script, "--plot", str(tmp_path / "hf_gpu_profile.json"), "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert plot.returncode == 0, plot.stderr[-2000:]
    assert (tmp_path / "hf_gpu_profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, script, "--tiny", "--variants", "dynamic,warp", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and "'dynamic,warp'" in bad.stderr and "merged_compiled" in bad.stderr
    compiled = subprocess.run([sys.executable, script, "--tiny", "--variants", "fast", "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert compiled.returncode == 2 and "compiled ones on a GPU only" in compiled.stderr  # compiles: refused on a CPU
