"""The command line: --help of every subcommand, clear errors for bad input before any work, config files."""

import shlex
import subprocess
import sys

import pytest

from libero_tgrpo.cli import main, parse, parse_states, parse_task
from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.options import command_line, load_config, save_config

SUBCOMMANDS = ["run", "demos", "sft", "train", "eval"]


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    """Help and error boxes are as wide as the terminal: keep each line whole."""
    monkeypatch.setenv("COLUMNS", "400")


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


def test_run_help_documents_main_options(capsys, monkeypatch):
    # one column of 80 characters: the text reads in order once the box characters are dropped (a wider
    # terminal lays the option groups side by side, interleaving their lines)
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for opt in ("--policy", "--num-envs", "--alpha1", "--alpha2", "--resume", "--record", "--states"):
        assert opt in out
    assert "T4 0.35/0.65" in out  # the paper's alphas are the documented default


def test_run_defaults_are_the_main_job():
    _, args = parse(["run"])
    cfg = args.options
    assert cfg.task == 4 and cfg.policy == "state" and cfg.seed == 0 and cfg.output_dir == "outputs/main"
    assert cfg.alpha1 is None and cfg.alpha2 is None and cfg.eval.states == tuple(range(50))
    assert cfg == PipelineConfig()


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
        (["train", "--alpha1", "-0.5"], "alpha1=-0.5 is not accepted: it must be a finite number >= 0"),
        (["run", "--alpha2", "nan"], "alpha2=nan is not accepted"),
        (["train", "--num-envs", "1"], "num_envs=1 is not accepted: a TGRPO group needs at least 2"),
        (["eval", "x.pt", "--states", "0-50"], "benchmark states are 0-49"),
        (["run", "--lr", "-1"], "TGRPOConfig.lr=-1.0 is not accepted: the learning rate must be a finite number > 0"),
        (["run", "--temperature", "0"], "TGRPOConfig.temperature=0.0 is not accepted"),
        (["run", "--sft-lr", "-1"], "SFTConfig.lr=-1.0 is not accepted"),
        (["run", "--sft-epochs", "0"], "SFTConfig.epochs=0 is not accepted"),
        (["run", "--eval-temperature", "-1"], "eval_temperature=-1.0 is not accepted"),
        (["run", "--method", "ppo", "--ppo-gamma", "2"], "PPOConfig.gamma=2.0 is not accepted"),
        (["run", "--raw-alphas", "--alpha1", "0", "--alpha2", "0"], "at least one must be > 0"),
        (["train", "--rollout-mode", "async"], "--rollout-mode"),
        (["train", "--ray-address", "auto"], "ray_address='auto' needs vectorization='ray'"),
        (["eval", "x.pt", "--vectorization", "spark"], "--vectorization"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err


@pytest.mark.parametrize("flag,value", [("--lr", "-1"), ("--sft-lr", "-1"), ("--temperature", "0"),
                                        ("--eval-max-steps", "0"), ("--kl-beta", "-1")])
def test_a_bad_value_stops_run_before_any_work(tmp_path, flag, value, capsys):
    """The whole config is checked when it is built: nothing is written, no demonstration generated."""
    out, demos = tmp_path / "out", tmp_path / "demos"
    with pytest.raises(SystemExit) as e:
        main(["run", flag, value, "--output-dir", str(out), "--demo-cache", str(demos)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("libero-tgrpo run: error: ") and "not accepted" in err[0]
    assert not out.exists() and not demos.exists()


def test_console_script_rejects_a_bad_learning_rate_before_any_work(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "libero_tgrpo", "run", "--lr", "-1", "--output-dir", str(out),
                           "--demo-cache", str(tmp_path / "demos")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("libero-tgrpo run: error: TGRPOConfig.lr=-1.0 is not accepted")
    assert not out.exists() and not (tmp_path / "demos").exists()


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
    ["--vectorization", "ray", "--ray-address", "auto"],
])
def test_command_line_reproduces_the_config(argv):
    cfg = parse(["run", *argv])[1].options
    cmd = command_line(cfg)
    assert cmd.startswith("libero-tgrpo run")
    again = parse(shlex.split(cmd)[1:])[1].options
    assert again == cfg
    if not argv:
        assert cmd == "libero-tgrpo run"
    else:
        assert cfg != PipelineConfig()


def test_record_name_option():
    assert parse(["run"])[1].record is None
    assert parse(["run", "--record"])[1].record == "main_job"
    assert parse(["run", "--record", "--quiet"])[1].record == "main_job"
    assert parse(["run", "--record", "vision_task4"])[1].record == "vision_task4"


def test_yaml_config_round_trip(tmp_path):
    cfg = parse(["run", "--task", "2", "--seed", "3", "--method", "ppo", "--ppo-epochs", "2", "--states", "0-4,9",
                 "--hidden", "64,32", "--sft-lr", "0.01", "--lr", "3e-05", "--raw-alphas", "--no-video"])[1].options
    path = save_config(cfg, tmp_path / "run.yaml")
    assert "states: 0-4,9" in path.read_text()
    assert load_config(path) == cfg
    assert parse(["run", "--config", str(path)])[1].options == cfg
    # flags given with the file override it, the rest comes from the file
    over = parse(["run", "--config", str(path), "--seed", "5", "--lr", "1e-3"])[1].options
    assert over.seed == 5 and over.rl.lr == 1e-3 and over.ppo.epochs == 2 and over.hidden == (64, 32)
    # the same file works for the other subcommands (their own options come from it)
    assert parse(["train", "--config", str(path)])[1].options.rl.lr == 3e-05


@pytest.mark.parametrize("text,needle", [
    ("seed: 1\nlearning_rate: 0.1\n", "unknown option 'learning_rate'"),
    ("rl:\n  lrate: 0.1\n", "unknown option rl.lrate"),
    ("rl:\n  lr: -1\n", "TGRPOConfig.lr=-1 is not accepted"),
    ("task: 12\n", "unknown task 12"),
    ("seed: [1\n", "is not valid YAML"),
])
def test_bad_config_file_is_a_clear_error(tmp_path, text, needle, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", str(path), "--output-dir", str(tmp_path / "out")])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("policy", ["missing-local-dir", "nobody-here/no-such-vla"])
def test_a_model_that_cannot_load_gives_one_line_naming_it(tmp_path, policy):
    """A missing local directory, and a Hub id with the Hub switched off: one error line, exit 2."""
    import os

    if policy == "missing-local-dir":
        policy = str(tmp_path / "no-such-model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "libero_tgrpo", "train", "--policy", policy, "--quiet", "--output-dir",
         str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("libero-tgrpo train: error: "), proc.stderr
    assert "cannot load" in lines[0] and repr(policy) in lines[0]
    if "/" in policy and not policy.startswith("/"):
        assert "HF_HUB_OFFLINE" in lines[0] and "Hugging Face Hub id" in lines[0]
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
