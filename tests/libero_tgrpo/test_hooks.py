"""Between TGRPO iterations: safetensors snapshots, evaluation videos in TensorBoard, TensorBoard by default."""

import json

import pytest
import torch

from libero_tgrpo.cli import main, parse
from libero_tgrpo.config import EvalConfig, PipelineConfig
from libero_tgrpo.hooks import VIDEO_RENDER_SIZE
from libero_tgrpo.policies import build_policy, load_policy
from libero_tgrpo.stages import observation_space, run_train


def _cfg(tmp_path, **kw):
    base = PipelineConfig(output_dir=str(tmp_path), hidden=(16,), num_envs=2, progress=False, video=False,
                          eval=EvalConfig(states=(0,), max_steps=4))
    return base.replace(**{"rl.iterations": 2, "rl.max_steps": 4, **kw})


def test_tensorboard_is_on_by_default_and_log_formats_has_a_flag():
    assert "tensorboard" in PipelineConfig().rl.log_formats
    cfg = parse(["train", "--log-formats", "jsonl,wandb"])[1].options
    assert cfg.rl.log_formats == ("jsonl", "wandb")
    with pytest.raises(SystemExit):
        parse(["train", "--log-formats", "jsonl,mlflow"])


@pytest.mark.render
def test_snapshots_and_periodic_videos(tmp_path):
    pytest.importorskip("tensorboard")
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tmp_path, snapshot_interval=1, video_interval=2, video_state=3)
    policy, spec = build_policy("state", observation_space(cfg.task, cfg.obs_mode), seed=0, hidden=(16,))
    threads = torch.get_num_threads()
    try:
        run_train(cfg, policy, spec, tmp_path)
    finally:
        torch.set_num_threads(threads)
    # safetensors: the final policy and one snapshot per iteration, each loadable with its spec
    for name in ("policy.safetensors", "snapshots/iter_0001.safetensors", "snapshots/iter_0002.safetensors"):
        loaded, spec2, info = load_policy(tmp_path / name)
        assert spec2["kind"] == "state" and info["task"] == 4
    _, _, info = load_policy(tmp_path / "snapshots/iter_0001.safetensors")
    assert info["iteration"] == 1
    final, _, _ = load_policy(tmp_path / "policy.safetensors")
    last, _, _ = load_policy(tmp_path / "snapshots/iter_0002.safetensors")
    for a, b in zip(final.state_dict().values(), last.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # one video, at iteration 2 only, as a file and as a TensorBoard image sequence
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["iter_0002.mp4"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "eval/video_success" not in rows[0] and rows[1]["eval/video_success"] in (0.0, 1.0)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    (event,) = acc.Images("eval/video")
    assert event.step == 1 and event.width == VIDEO_RENDER_SIZE
    import io

    gif = Image.open(io.BytesIO(event.encoded_image_string))
    assert gif.n_frames > 4  # the reset frame and the warm-up-free steps of the rollout
    assert "charts/success_rate" in acc.Tags()["scalars"]


def test_train_command_writes_safetensors_that_eval_reads(tmp_path, capsys):
    out = tmp_path / "train"
    assert main(["train", "--task", "4", "--quiet", "--num-envs", "2", "--iterations", "1", "--max-steps", "3",
                 "--hidden", "16", "--output-dir", str(out)]) == 0
    assert (out / "policy.safetensors").is_file() and (out / "policy.json").is_file()
    assert not (out / "snapshots").exists()  # snapshot_interval 10 > 1 iteration
    assert main(["eval", str(out / "policy.safetensors"), "--quiet", "--states", "0", "--eval-max-steps", "3",
                 "--output-dir", str(tmp_path / "eval")]) == 0
    res = json.loads((tmp_path / "eval/eval.json").read_text())
    assert res["policy_info"]["stage"] == "tgrpo"
