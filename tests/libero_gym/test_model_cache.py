"""libero_gym.model_cache: scenes compile once, then load from MJB with the same model bit for bit."""

import hashlib

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import libero_gym  # noqa: F401
from libero_gym import model_cache

SMALL_XML = """
<mujoco>
  <worldbody>
    <body name="box" pos="0 0 1"><freejoint/><geom type="box" size=".1 .2 .3" rgba="1 0 0 1"/></body>
    <geom type="plane" size="2 2 .1"/>
  </worldbody>
</mujoco>
"""


def _model_bytes(m):
    """SHA-256 of the model's MJB serialisation (a digest keeps assertion messages short)."""
    buf = np.zeros(mujoco.mj_sizeModel(m), dtype=np.uint8)
    mujoco.mj_saveModel(m, None, buf)
    return hashlib.sha256(buf.tobytes()).hexdigest()


def test_cache_hit_is_the_compiled_model_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBERO_GYM_MODEL_CACHE", str(tmp_path))
    direct = mujoco.MjModel.from_xml_string(SMALL_XML)
    first = model_cache.compiled_model(SMALL_XML)  # miss: compiled in a subprocess
    files = list(tmp_path.glob("*.mjb"))
    assert len(files) == 1 and files[0].stem == model_cache.model_cache_key(SMALL_XML)
    second = model_cache.compiled_model(SMALL_XML)  # hit
    assert _model_bytes(first) == _model_bytes(direct) == _model_bytes(second)
    d1, d2 = mujoco.MjData(direct), mujoco.MjData(second)
    for _ in range(200):
        mujoco.mj_step(direct, d1)
        mujoco.mj_step(second, d2)
    np.testing.assert_array_equal(d1.qpos, d2.qpos)


def test_corrupt_cache_file_is_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo logs the bad header to ./MUJOCO_LOG.TXT
    monkeypatch.setenv("LIBERO_GYM_MODEL_CACHE", str(tmp_path))
    path = tmp_path / f"{model_cache.model_cache_key(SMALL_XML)}.mjb"
    path.write_bytes(b"not a model")
    m = model_cache.compiled_model(SMALL_XML)  # falls back to compiling, and drops the bad file
    assert m.nbody == 2 and not path.exists()
    model_cache.compiled_model(SMALL_XML)
    assert path.stat().st_size > 100


def test_cache_off_and_unwritable(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBERO_GYM_MODEL_CACHE", "off")
    assert model_cache.cache_dir() is None
    assert model_cache.compiled_model(SMALL_XML).nbody == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LIBERO_GYM_MODEL_CACHE", str(blocker / "sub"))  # cannot be created
    assert model_cache.compiled_model(SMALL_XML).nbody == 2


def test_bad_xml_raises_mujocos_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBERO_GYM_MODEL_CACHE", str(tmp_path))
    with pytest.raises(ValueError):
        model_cache.compiled_model("<mujoco><worldbody><geom type='nonsense'/></worldbody></mujoco>")
    assert not list(tmp_path.glob("*.mjb")) and not list(tmp_path.glob("*.tmp"))


def test_libero_scene_from_cache_equals_a_fresh_compile(tmp_path, monkeypatch):
    """The real LIBERO scene: an env built from the cache has the model robosuite would compile."""
    monkeypatch.setenv("LIBERO_GYM_MODEL_CACHE", str(tmp_path))
    env = gym.make("LiberoObject-Task4-v0")
    env.reset(seed=0)
    u = env.unwrapped
    xml = u._sim_env.model.get_xml()  # what robosuite compiles (no xml processor in LIBERO)
    env.close()
    files = list(tmp_path.glob("*.mjb"))
    assert [p.stem for p in files] == [model_cache.model_cache_key(xml)]
    # (the env's live model differs: LIBERO edits some fields after building the sim, as it does uncached)
    cached = _model_bytes(mujoco.MjModel.from_binary_path(str(files[0])))
    assert _model_bytes(mujoco.MjModel.from_xml_string(xml)) == cached
