"""The public API of tgrpo (its import boundaries are checked in tests/test_boundaries.py)."""

def test_public_api():
    import tgrpo

    for name in (
        "train",
        "TGRPOConfig",
        "ActionTokenizer",
        "TokenActionPolicy",
        "MLPTokenPolicy",
        "step_advantages",
        "trajectory_advantages",
        "tgrpo_advantages",
        "tgrpo_loss",
        "collect_group",
        "evaluate",
    ):
        assert hasattr(tgrpo, name), name
