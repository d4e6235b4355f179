"""What a user sees on the console: no import-time noise from robosuite."""

import subprocess
import sys

import pytest


def test_importing_the_simulator_prints_no_macro_file_notice():
    code = "import libero_gym, robosuite, logging; logging.getLogger('robosuite_logs').warning('kept')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "macro file" not in out.stdout + out.stderr
    # Other robosuite warnings still reach the console.
    assert "kept" in out.stderr


@pytest.mark.render
def test_an_env_left_open_at_exit_frees_its_gl_context_quietly():
    code = (
        "import gymnasium as gym, libero_gym\n"
        "env = gym.make('LiberoObject-Task1-v0', obs_mode='state', render_mode='rgb_array', render_size=32)\n"
        "env.reset(seed=0)\n"
        "assert env.render().shape == (32, 32, 3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "eglDestroyContext" not in out.stderr and "Traceback" not in out.stderr, out.stderr
