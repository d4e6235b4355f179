"""What a user sees on the console: no import-time noise from robosuite."""

import subprocess
import sys


def test_importing_the_simulator_prints_no_macro_file_notice():
    code = "import libero_gym, robosuite, logging; logging.getLogger('robosuite_logs').warning('kept')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "macro file" not in out.stdout + out.stderr
    # Other robosuite warnings still reach the console.
    assert "kept" in out.stderr
