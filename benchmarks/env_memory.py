"""Memory and start-up time of one env process, with and without the compiled-model cache.

Each measurement runs in a fresh subprocess (as an env worker of ``gym.make_vec`` is): import, make, first
reset, a few steps; it reports the resident memory (VmRSS) and the time to the first observation. Three
settings per task: the cache off (robosuite compiles the scene in-process, as raw LIBERO does), the cache
cold (this process fills it: the compile runs in a subprocess) and the cache warm (load from MJB).

Usage:
    python -m benchmarks.env_memory                 # Task4 and Task1
    python -m benchmarks.env_memory --tasks 1-10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks._common import RESULTS, parse_ints, write_json

_PROBE = r"""
import json, time
t0 = time.perf_counter()
import gymnasium as gym, numpy as np
import libero_gym
env = gym.make("LiberoObject-Task%d-v0")
env.reset(seed=0)
t1 = time.perf_counter()
for _ in range(20):
    env.step(np.zeros(7, dtype=np.float32))
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
print("RESULT " + json.dumps({"rss_mb": rss / 1024, "first_obs_s": t1 - t0}))
"""


def probe(task: int, cache: str) -> dict[str, float]:
    """Run one fresh env process with ``LIBERO_GYM_MODEL_CACHE=cache``; its RSS and start-up time."""
    env = {**os.environ, "LIBERO_GYM_MODEL_CACHE": cache, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    out = subprocess.run([sys.executable, "-c", _PROBE % task], env=env, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="4,1", help="tasks, e.g. 4,1 or 1-10 (default: %(default)s)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for task in parse_ints(args.tasks):
            off = probe(task, "off")
            cold = probe(task, cache)
            warm = probe(task, cache)
            rows.append({"task": task, "off": off, "cold": cold, "warm": warm})
            print(f"Task{task}: off {off['rss_mb']:.0f} MB {off['first_obs_s']:.1f}s | cold {cold['rss_mb']:.0f} MB "
                  f"{cold['first_obs_s']:.1f}s | warm {warm['rss_mb']:.0f} MB {warm['first_obs_s']:.1f}s", flush=True)
    path = write_json("env_memory", {"rows": rows, "command": "python -m benchmarks.env_memory --tasks " + args.tasks})
    payload = json.loads(path.read_text())
    m = payload["machine"]
    lines = [
        "# Env process memory and start-up, with and without the compiled-model cache",
        "",
        "One fresh process per cell: import, `gym.make`, first reset, 20 steps (state mode). RSS = resident "
        "memory after those steps; start-up = time from the imports to the first observation. *off*: "
        "`LIBERO_GYM_MODEL_CACHE=off` (robosuite compiles the scene in-process, as raw LIBERO does); *cold*: "
        "the first process, which fills the cache; *warm*: every later process.",
        "",
        "| task | RSS off (MB) | RSS cold | RSS warm | start-up off (s) | cold | warm |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| T{r['task']} | {r['off']['rss_mb']:.0f} | {r['cold']['rss_mb']:.0f} | {r['warm']['rss_mb']:.0f} "
                     f"| {r['off']['first_obs_s']:.1f} | {r['cold']['first_obs_s']:.1f} | {r['warm']['first_obs_s']:.1f} |")
    lines += ["", f"Command: `{payload['command']}`.",
              f"Machine: {m.get('cpu_model', '?')} ({m.get('cpu_count')} cores). Versions: "
              + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()), ""]
    (RESULTS / "env_memory.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'env_memory.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
