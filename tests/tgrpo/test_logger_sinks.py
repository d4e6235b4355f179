"""Metric and video sinks: Weights & Biases (the real package, offline mode) and TensorBoard videos."""

import glob
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tgrpo.logger import MetricsLogger, log_video

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode with every file of it under tmp_path (no network, nothing in the home directory)."""
    wandb = pytest.importorskip("wandb", reason="the W&B sink needs the 'wandb' extra")
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                     ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    return wandb


def _wandb_records(run_dir, timeout=60.0):
    """The records of an offline run's ``run-<id>.wandb`` file, once W&B's service process has written the
    run's ``exit`` record (``finish()`` can return before the file is flushed)."""
    deadline = time.monotonic() + timeout
    while True:
        records = _read_wandb_file(run_dir)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _read_wandb_file(run_dir):
    """The records of ``run-<id>.wandb`` (W&B's log of length-prefixed protobufs in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    data = Path(path).read_bytes()
    if len(data) < 7:
        return []
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # a full record, or the last piece of one
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    return records


def _history(records):
    """History rows as dicts; a media value (logged as one item per field) becomes a nested dict."""
    rows = []
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            row: dict = {}
            for item in rec.history.item:
                path = [item.key] if item.key else list(item.nested_key)
                node = row
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = json.loads(item.value_json)
            rows.append(row)
    return rows


def test_wandb_sink_logs_every_row_at_its_iteration_offline(tmp_path, wandb_offline):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"lr": 0.001, "task": 4}))
    logger = MetricsLogger(run_dir, ("jsonl", "wandb"))
    rows = [{"iteration": k, "charts/success_rate": k / 4, "losses/loss": 1.5 - k, "note": "text"} for k in range(3)]
    for row in rows:
        logger.write(row)
    logger.close()
    records = _wandb_records(run_dir)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "libero-tgrpo" and run.display_name == "run"
    assert run.run_id == (run_dir / "wandb_run_id.txt").read_text().strip()
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["lr"] == 0.001 and config["task"] == 4
    history = _history(records)
    assert [h["_step"] for h in history] == [0, 1, 2]
    for h, row in zip(history, rows):
        assert h["charts/success_rate"] == row["charts/success_rate"] and h["losses/loss"] == row["losses/loss"]
        assert "note" not in h


def test_wandb_is_imported_only_when_asked(tmp_path):
    code = ("import sys; from tgrpo.logger import MetricsLogger, log_video; "
            f"m = MetricsLogger({str(tmp_path)!r}, ('jsonl', 'csv')); m.write({{'iteration': 0, 'x': 1.0}}); m.close(); "
            "assert 'wandb' not in sys.modules, 'wandb was imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def _frames(t=6, size=24):
    """Frames of a few flat colours (a GIF keeps them exactly)."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [255, 255, 0]], np.uint8)
    frames = np.zeros((t, size, size, 3), np.uint8)
    for i in range(t):
        frames[i] = colours[i % len(colours)]
        frames[i, : size // 2, : size // 2] = colours[(i + 1) % len(colours)]
    return frames


def test_log_video_writes_an_animated_gif_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard videos need tensorboard")
    pytest.importorskip("PIL", reason="TensorBoard videos need Pillow")
    from PIL import Image, ImageSequence
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    frames = _frames()
    assert log_video(tmp_path, "eval/video", frames, step=3, fps=10, formats=("tensorboard",)) == ["tensorboard"]
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    acc.Reload()
    (event,) = acc.Images("eval/video")
    assert event.step == 3 and (event.height, event.width) == (24, 24)
    import io

    gif = Image.open(io.BytesIO(event.encoded_image_string))
    back = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)])
    np.testing.assert_array_equal(back, frames)


def test_log_video_reaches_the_active_wandb_run(tmp_path, wandb_offline):
    imageio = pytest.importorskip("imageio.v2", reason="writing the mp4 needs imageio-ffmpeg")
    pytest.importorskip("imageio_ffmpeg")
    frames = _frames(t=8, size=32)
    mp4 = tmp_path / "clip.mp4"
    imageio.mimsave(mp4, list(frames), fps=10)
    logger = MetricsLogger(tmp_path, ("jsonl", "wandb"))
    written = log_video(tmp_path, "eval/video", frames, step=0, video_path=mp4, formats=("wandb",))
    logger.write({"iteration": 0, "charts/success_rate": 0.5})
    logger.close()
    assert written == ["wandb"]
    (row,) = _history(_wandb_records(tmp_path))
    assert row["eval/video"]["_type"] == "video-file" and row["charts/success_rate"] == 0.5
