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
         "--repeats", "1", "--image-size", "32", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["runs"]) == {"no_checkpointing", "gradient_checkpointing"}
    for row in res["runs"].values():
        assert all(row[k] > 0 for k in ("sample_ms", "log_probs_ms", "ref_log_probs_ms", "update_ms",
                                         "tgrpo_iteration_s"))
    assert res["runs"]["no_checkpointing"]["sample_static_ms"] > 0  # the static KV cache, timed beside
    assert "sample_compiled_ms" not in res["runs"]["no_checkpointing"]  # compiling on a CPU: only with --compile
    assert res["device"] == "cpu" and "versions" in res
