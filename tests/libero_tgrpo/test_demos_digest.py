"""The demonstrations' digest in ``run.json`` is of their episodes, not of the file's bytes.

A demo cache regenerated with the same episodes (its generation time, package versions and zip timestamps
differ) resumes the run; one changed value refuses it, naming the demos digest; a file digest recorded by an
earlier version is still accepted for the same file. The sets are small synthetic episodes written and read
by the real ``.npz`` writer and reader, no env is needed; the main job's resume on a regenerated cache is
checked in ``test_pipeline.py``.
"""

import dataclasses
import json

import numpy as np
import pytest

from libero_gym import STATE_DIM
from libero_tgrpo.demo_set import DemoSet, demos_digest, load_demos, save_demos
from libero_tgrpo.demos import demos_cache_path, get_demos
from libero_tgrpo.files import RunDirError
from libero_tgrpo.rundir import RUN_RECORD, RunDir, file_digest
from tgrpo import ActionTokenizer

TASK4 = "pick up the bbq sauce and place it in the basket"


def _quiet(msg):
    pass


def _episodes(lengths=(5, 4), seed=0):
    """A set of expert-like episodes of Task4 with the meta the expert writes (generation time, versions)."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    actions = rng.uniform(-1, 1, (n, 7)).astype(np.float32)
    return DemoSet(
        obs={"state": rng.normal(size=(n, STATE_DIM)).astype(np.float32)},
        actions=actions,
        tokens=ActionTokenizer().encode(actions),
        episode_lengths=np.asarray(lengths, dtype=np.int64),
        episode_seeds=np.arange(len(lengths), dtype=np.int64),
        meta={"task": 4, "instruction": TASK4, "n": len(lengths), "seed": 0, "noise": 0.0,
              "generation_s": 12.34, "versions": {"numpy": np.__version__}},
    )


def _regenerated(demos):
    """The same episodes as a fresh generation writes them: other generation time and versions."""
    return dataclasses.replace(demos, meta={**demos.meta, "generation_s": 56.78, "versions": {"numpy": "x.y"}})


def _with_one_action_changed(demos):
    actions = demos.actions.copy()
    actions[3, 2] += 0.25
    return dataclasses.replace(demos, actions=actions)


def test_the_digest_is_of_the_episodes_not_of_the_files_metadata(tmp_path):
    demos = _episodes()
    first = load_demos(save_demos(demos, tmp_path / "a.npz"))
    again = load_demos(save_demos(_regenerated(demos), tmp_path / "b.npz"))
    assert file_digest(tmp_path / "a.npz") != file_digest(tmp_path / "b.npz")  # the bytes differ ...
    assert demos_digest(first) == demos_digest(again) == demos_digest(demos)  # ... the episodes do not
    assert demos_digest(first).startswith("episodes-sha256:")

    def changed(**kw):
        return demos_digest(dataclasses.replace(demos, **kw))

    tokens = demos.tokens.copy()
    tokens[0, 0] = (tokens[0, 0] + 1) % 256
    state = demos.obs["state"].copy()
    state[-1, -1] += 1e-3
    others = [
        demos_digest(_with_one_action_changed(demos)),
        changed(tokens=tokens),
        changed(obs={"state": state}),
        changed(obs={"state": demos.obs["state"], "agentview": np.zeros((9, 8, 8, 3), np.uint8)}),
        changed(episode_lengths=np.asarray([4, 5], dtype=np.int64)),
        changed(episode_seeds=np.asarray([0, 7], dtype=np.int64)),
        changed(actions=demos.actions.astype(np.float64)),  # same values, another dtype
        changed(obs={"state": demos.obs["state"].reshape(9, STATE_DIM, 1)}),  # same bytes, another shape
        changed(meta={**demos.meta, "instruction": "pick up the ketchup and place it in the basket"}),
        changed(meta={**demos.meta, "task": 5}),
    ]
    assert len({demos_digest(demos), *others}) == len(others) + 1


def test_resume_accepts_a_regenerated_demo_cache_and_refuses_changed_episodes(tmp_path):
    cache = tmp_path / "cache"
    path = save_demos(_episodes(), demos_cache_path(cache, 4, 2, 0))

    def check(resume):
        demos, got, cached = get_demos(4, 2, seed=0, cache_dir=cache, progress=False)
        assert cached and got == path
        with RunDir(tmp_path / "run", resume=resume, say=_quiet) as run:
            run.check_demos(demos, got)
            run.json_stage("eval", "eval.json", lambda: {"success": [1]})

    check(resume=False)
    recorded = json.loads((tmp_path / "run" / RUN_RECORD).read_text())["digests"]["demos"]
    before = file_digest(path)
    path.unlink()  # the cache is removed and made again with the same episodes
    save_demos(_regenerated(_episodes()), demos_cache_path(cache, 4, 2, 0))
    assert file_digest(path) != before
    check(resume=True)
    assert json.loads((tmp_path / "run" / RUN_RECORD).read_text())["digests"]["demos"] == recorded

    save_demos(_with_one_action_changed(_regenerated(_episodes())), path)
    with pytest.raises(RunDirError, match=r"demos digest: episodes-sha256:[0-9a-f]+ -> episodes-sha256:[0-9a-f]+"):
        check(resume=True)


def test_resume_accepts_the_file_digest_an_earlier_version_recorded(tmp_path):
    """Earlier versions recorded ``file_digest`` of the demonstrations file: accepted for the same file (and
    replaced by the content digest), refused for a file with other bytes."""
    path = save_demos(_episodes(), tmp_path / "demos.npz")
    for name in ("old", "other"):
        with RunDir(tmp_path / name, say=_quiet) as run:
            run.check_digest("demos", path)  # what the earlier version recorded
            run.json_stage("eval", "eval.json", lambda: {"success": [1]})
        assert json.loads((tmp_path / name / RUN_RECORD).read_text())["digests"]["demos"] == file_digest(path)

    demos = load_demos(path)
    with RunDir(tmp_path / "old", resume=True, say=_quiet) as run:
        assert run.check_demos(demos, path) == demos_digest(demos)
    assert json.loads((tmp_path / "old" / RUN_RECORD).read_text())["digests"]["demos"] == demos_digest(demos)

    save_demos(_regenerated(_episodes()), path)  # same episodes, other bytes: the old record cannot tell
    with RunDir(tmp_path / "other", resume=True, say=_quiet) as run:
        with pytest.raises(RunDirError, match=r"demos digest: sha256:[0-9a-f]+ -> episodes-sha256:"):
            run.check_demos(load_demos(path), path)

