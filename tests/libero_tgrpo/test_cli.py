"""The command line: --help of every subcommand, and clear errors for bad input."""

import pytest

from libero_tgrpo.cli import build_parser, main, parse_states, parse_task

SUBCOMMANDS = ["run", "demos", "sft", "train", "eval"]


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in SUBCOMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--task" in out and "--seed" in out and "--output-dir" in out


def test_run_help_documents_main_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for opt in ("--policy", "--num-envs", "--alpha1", "--alpha2", "--resume", "--record", "--states"):
        assert opt in out
    assert "T4 0.35/0.65" in out  # the paper's alphas are the documented default


def test_run_defaults_are_the_main_job():
    args = build_parser().parse_args(["run"])
    assert args.task == 4 and args.policy == "state" and args.seed == 0 and args.output_dir == "outputs/main"
    assert args.alpha1 is None and args.alpha2 is None and args.states == tuple(range(50))


@pytest.mark.parametrize("text,task", [("4", 4), ("Task10", 10), ("LiberoObject-Task2-v0", 2)])
def test_parse_task(text, task):
    assert parse_task(text) == task


def test_parse_states():
    assert parse_states("all") == tuple(range(50))
    assert parse_states("0-2,7") == (0, 1, 2, 7)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--task", "11"], "unknown task '11'"),
        (["train", "--task", "bbq"], "accepted are 1-10"),
        (["train", "--alpha1", "-0.5"], "--alpha1 '-0.5' is not accepted"),
        (["run", "--alpha2", "nan"], "--alpha2 'nan' is not accepted"),
        (["train", "--num-envs", "1"], "--num-envs '1' is not accepted: it must be >= 2"),
        (["eval", "x.pt", "--states", "0-50"], "benchmark states are 0-49"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_missing_demos_file_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    with pytest.raises(SystemExit) as e:
        main(["sft", "--demos", str(missing), "--output-dir", str(tmp_path / "sft"), "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err and "libero-tgrpo demos" in err


def test_missing_policy_file_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tmp_path / "policy.pt"), "--quiet"])
    assert e.value.code == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [],
    ["--policy", "vision", "--sft-epochs", "30", "--iterations", "10", "--output-dir", "outputs/v"],
    ["--task", "1", "--seed", "2", "--raw-alphas", "--alpha1", "3", "--states", "0,3,7", "--hidden", "64,32",
     "--independent-placements", "--no-video", "--method", "traj_only", "--lr", "3e-05"],
])
def test_command_line_reproduces_the_config(argv):
    import shlex

    from libero_tgrpo.cli import _config
    from libero_tgrpo.pipeline import command_line

    cfg = _config(build_parser().parse_args(["run", *argv]))
    cmd = command_line(cfg)
    assert cmd.startswith("libero-tgrpo run")
    again = _config(build_parser().parse_args(shlex.split(cmd)[1:]))
    assert again == cfg
    if not argv:
        assert cmd == "libero-tgrpo run"


def test_record_name_option():
    assert build_parser().parse_args(["run"]).record is None
    assert build_parser().parse_args(["run", "--record"]).record == "main_job"
    assert build_parser().parse_args(["run", "--record", "vision_task4"]).record == "vision_task4"
