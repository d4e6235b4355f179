"""The paper's per-task alphas and the method table."""

import pytest

from libero_tgrpo import PAPER_ALPHAS, PAPER_TABLE1
from libero_tgrpo.pipeline import method_alphas


def test_paper_alphas_cover_all_tasks():
    assert sorted(PAPER_ALPHAS) == list(range(1, 11))
    assert PAPER_ALPHAS[4] == (0.35, 0.65) and PAPER_ALPHAS[1] == (10.0, 1.0) and PAPER_ALPHAS[2] == (1.0, 0.1)


def test_paper_table_averages():
    assert sum(PAPER_TABLE1["sft"].values()) / 10 == pytest.approx(86.4)
    assert sum(PAPER_TABLE1["tgrpo"].values()) / 10 == pytest.approx(91.0)


def test_method_alphas_raw():
    assert method_alphas("tgrpo", 4, normalize=False) == (0.35, 0.65)
    assert method_alphas("step_only", 8, normalize=False) == (10.0, 0.0)
    assert method_alphas("traj_only", 8, normalize=False) == (0.0, 1.0)
    assert method_alphas("tgrpo", 4, alpha1=1.0, normalize=False) == (1.0, 0.65)


def test_method_alphas_normalized_keep_the_paper_ratio():
    # Pairs that sum to 1 are returned bit for bit, so runs made before normalisation stay valid.
    for task in (4, 5, 6, 9, 10):
        assert method_alphas("tgrpo", task) == PAPER_ALPHAS[task]
    a1, a2 = method_alphas("tgrpo", 8)
    assert a1 + a2 == pytest.approx(1.0) and a1 / a2 == pytest.approx(10.0)
    assert method_alphas("tgrpo", 4, alpha1=3.0, alpha2=1.0) == (0.75, 0.25)
    with pytest.raises(ValueError, match="at least one must be > 0"):
        method_alphas("tgrpo", 4, alpha1=0.0, alpha2=0.0)


def test_ablations_are_normalised_after_zeroing_on_every_task():
    # step-only is (1, 0) and trajectory-only (0, 1) whatever the task's pair: the kept advantage has the same
    # unit weight as TGRPO's normalised pair, so every method faces the same effective KL strength.
    for task in range(1, 11):
        assert method_alphas("step_only", task) == (1.0, 0.0), task
        assert method_alphas("traj_only", task) == (0.0, 1.0), task
        assert sum(method_alphas("tgrpo", task)) == pytest.approx(1.0)
    assert method_alphas("traj_only", 4, alpha1=3.0, alpha2=0.5) == (0.0, 1.0)
    with pytest.raises(ValueError, match="keeps only a weight that is 0"):
        method_alphas("step_only", 4, alpha1=0.0)


def test_tasks_1_2_7_default_to_their_heldout_alphas_and_the_others_to_the_papers():
    from libero_tgrpo import HELDOUT_ALPHAS, PipelineConfig, default_alphas

    # benchmarks/results/alpha_task2/ and alpha_task1_task7/
    assert HELDOUT_ALPHAS == {1: (0.2, 0.8), 2: (0.2, 0.8), 7: (0.2, 0.8)}
    assert PipelineConfig(task=1).alphas == (0.2, 0.8) and PipelineConfig(task=7).alphas == (0.2, 0.8)
    assert PipelineConfig(task=2).alphas == (0.2, 0.8) and method_alphas("tgrpo", 2) == (0.2, 0.8)
    assert PipelineConfig(task=2, alpha1=1.0, alpha2=0.1).alphas == pytest.approx((0.90909, 0.09091), abs=1e-4)
    assert PipelineConfig(task=2, method="step_only").alphas == (1.0, 0.0)  # the ablations do not change
    for task in (3, 4, 5, 6, 8, 9, 10):
        assert default_alphas(task) == PAPER_ALPHAS[task], task


def test_method_alphas_errors():
    with pytest.raises(ValueError, match="method='grpo'"):
        method_alphas("grpo", 4)
    with pytest.raises(ValueError, match="alpha1=-1.0"):
        method_alphas("tgrpo", 4, alpha1=-1.0)
    with pytest.raises(ValueError, match="1-10"):
        method_alphas("tgrpo", 11)
