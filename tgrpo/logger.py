"""Metric sinks: JSONL, CSV, TensorBoard and Weights & Biases, one row per iteration; videos for the last two.

Metric names use fixed prefixes: ``charts/`` (success, returns, lengths), ``losses/`` (loss terms and
diagnostics), ``time/`` (seconds per phase), ``eval/`` (evaluation hook). Every row also has ``iteration``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("tgrpo")


class MetricsLogger:
    """Writes metric rows to ``metrics.jsonl``, ``metrics.csv`` and TensorBoard under ``output_dir``.

    Args:
        output_dir: directory of the run.
        formats: any of ``"jsonl"``, ``"csv"``, ``"tensorboard"``, ``"wandb"`` (:class:`WandbSink`).
        start_iteration: the rows of an earlier run with ``iteration < start_iteration`` are kept in every
            file sink (read from ``metrics.jsonl``, or from ``metrics.csv`` when only CSV is written), the later
            ones dropped (a resumed run repeats the iterations after its last checkpoint); 0 starts fresh files.
    """

    def __init__(
        self, output_dir: str | os.PathLike, formats: Sequence[str], start_iteration: int = 0
    ) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.formats = tuple(formats)
        self.jsonl_path = self.dir / "metrics.jsonl"
        self.csv_path = self.dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if start_iteration > 0:
            self.rows = [r for r in self._earlier_rows() if r.get("iteration", 0) < start_iteration]
        # every sink starts from the kept rows: none lost, none twice (a resumed run rewrites the later ones)
        if "jsonl" in self.formats:
            with open(self.jsonl_path, "w") as f:
                for row in self.rows:
                    f.write(json.dumps(row) + "\n")
        if "csv" in self.formats:
            if self.rows:
                self._write_csv()
            else:
                self.csv_path.unlink(missing_ok=True)
        self._tb = None
        if "tensorboard" in self.formats:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=start_iteration or None)
            except ImportError:
                log.warning(
                    "tensorboard is not installed; TensorBoard logging is skipped (pip install tensorboard)."
                )
        self._wandb = WandbSink(self.dir) if "wandb" in self.formats else None

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (``{"iteration": k, name: float, ...}``) to every sink."""
        self.rows.append(row)
        if "jsonl" in self.formats:
            with open(self.jsonl_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if "csv" in self.formats:
            self._write_csv()
        if self._tb is not None:
            step = int(row["iteration"])
            for k, v in row.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.write(row)

    def _earlier_rows(self) -> list[dict[str, Any]]:
        """The rows an earlier run wrote: from ``metrics.jsonl`` when this logger writes it (the exact values),
        else from ``metrics.csv``; one per iteration (the last one written), in iteration order."""
        rows: list[dict[str, Any]] = []
        if "jsonl" in self.formats or not self.csv_path.exists():
            if self.jsonl_path.exists():
                with open(self.jsonl_path) as f:
                    for line in f:
                        line = line.strip()
                        if not line:
                            continue
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError:  # a line cut by a killed process
                            continue
        else:
            with open(self.csv_path, newline="") as f:
                rows = [{k: _csv_value(v) for k, v in r.items() if k is not None and v not in ("", None)}
                        for r in csv.DictReader(f)]
        by_iteration = {int(r.get("iteration", 0)): r for r in rows}
        return [by_iteration[k] for k in sorted(by_iteration)]

    def _write_csv(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp.{os.getpid()}")  # one per writing process
        try:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(self.rows)
            os.replace(tmp, self.csv_path)
        finally:
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None


WANDB_DEFAULT_PROJECT = "libero-tgrpo"
"""W&B project of :class:`WandbSink` when neither ``project`` nor ``WANDB_PROJECT`` is given."""


class WandbSink:
    """Weights & Biases sink: each metric row logged at ``step = row["iteration"]``.

    ``wandb`` is imported only when this sink is made (``log_formats`` containing ``"wandb"``; extra
    ``[wandb]``). W&B's own environment variables apply: ``WANDB_MODE=offline`` writes the run under
    ``output_dir/wandb`` without a network (``wandb sync`` uploads it later), ``WANDB_PROJECT``,
    ``WANDB_ENTITY``, ``WANDB_API_KEY``. The run id is kept in ``output_dir/wandb_run_id.txt``, so a resumed
    training run continues the same W&B run. ``config.json`` of the run directory (or of its parent) becomes
    the run's config.

    Args:
        output_dir: the training run's directory.
        project: W&B project (None: ``WANDB_PROJECT``, else :data:`WANDB_DEFAULT_PROJECT`).
        name: run name (None: the directory's name).
    """

    def __init__(self, output_dir: str | os.PathLike, project: str | None = None, name: str | None = None) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError(
                "log_formats includes 'wandb' but wandb is not installed: pip install 'libero-tgrpo[wandb]'."
            ) from e
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        id_file = self.dir / "wandb_run_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        config: dict[str, Any] = {}
        for candidate in (self.dir / "config.json", self.dir.parent / "config.json"):
            if candidate.is_file():
                try:
                    config = json.loads(candidate.read_text())
                except (OSError, json.JSONDecodeError):
                    config = {}
                break
        self.run = wandb.init(
            project=project or os.environ.get("WANDB_PROJECT") or WANDB_DEFAULT_PROJECT,
            name=name or self.dir.name,
            id=run_id,
            resume="allow",
            dir=str(self.dir),
            config=config,
        )

    def write(self, row: dict[str, Any]) -> None:
        """Log the numeric values of one row at its iteration."""
        values = {k: v for k, v in row.items() if k != "iteration" and isinstance(v, (int, float))}
        self.run.log(values, step=int(row["iteration"]))

    def close(self) -> None:
        """Finish the run (offline: its files are complete under ``output_dir/wandb``)."""
        self.run.finish()


def _gif_bytes(frames: Any, fps: float) -> bytes:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def log_video(
    output_dir: str | os.PathLike,
    tag: str,
    frames: Any,
    step: int,
    *,
    fps: float = 20.0,
    video_path: str | os.PathLike | None = None,
    formats: Sequence[str] = ("tensorboard", "wandb"),
) -> list[str]:
    """Log a video to TensorBoard (an animated GIF in the Images tab, under ``output_dir/tb``) and to the
    active W&B run (``wandb.Video`` of the mp4 at ``video_path``).

    Args:
        output_dir: the training run's directory (its ``tb`` folder receives the event).
        tag: the name, e.g. ``"eval/video"``.
        frames: [T, H, W, 3] uint8 frames.
        step: the iteration.
        fps: frames per second of the GIF.
        video_path: the same video as a file (mp4) for W&B; None: no W&B video.
        formats: the sinks to try; a sink that is not installed (tensorboard, Pillow) or has no active run
            (W&B) is skipped.

    Returns:
        The sinks written (``"tensorboard"``, ``"wandb"``).
    """
    written: list[str] = []
    if "tensorboard" in formats:
        try:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            gif = _gif_bytes(frames, fps)
        except ImportError as e:
            log.warning("the TensorBoard video is skipped: %s (pip install tensorboard pillow)", e)
        else:
            h, w = int(frames[0].shape[0]), int(frames[0].shape[1])
            image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif)
            writer = EventFileWriter(str(Path(output_dir) / "tb"))
            writer.add_event(Event(wall_time=time.time(), step=int(step),
                                   summary=Summary(value=[Summary.Value(tag=tag, image=image)])))
            writer.close()
            written.append("tensorboard")
    if "wandb" in formats and video_path is not None:
        import sys

        wandb = sys.modules.get("wandb")  # only a run this process started; never imported here
        if wandb is not None and wandb.run is not None:
            wandb.run.log({tag: wandb.Video(str(video_path), format="mp4")}, step=int(step))
            written.append("wandb")
    return written


def _csv_value(text: str) -> Any:
    """A value of ``metrics.csv`` as it was logged: int, float (``repr`` round-trips exactly) or text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def plot_training_curve(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> bool:
    """Plot success rate, mean return and mean trajectory length per iteration to ``path`` (PNG).

    In the paper's rollout mode a group stops at its first success, so the group success rate stays low
    while learning shows as shorter trajectories; the evaluation success rate is drawn when logged.

    Returns:
        True if written, False if matplotlib is not installed (a log line says so).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed; the training-curve plot is skipped.")
        return False
    its = [r["iteration"] for r in rows]
    fig = Figure(figsize=(12, 3.2))
    FigureCanvasAgg(fig)
    panels = (
        ("charts/success_rate", "group success rate"),
        ("charts/mean_return", "mean trajectory return"),
        ("charts/episode_length", "mean trajectory length (steps)"),
    )
    for ax, (key, label) in zip(fig.subplots(1, 3), panels, strict=True):
        ax.plot(its, [r.get(key, float("nan")) for r in rows], marker=".", label="training group")
        if key == "charts/success_rate":
            ev = [(r["iteration"], r["eval/success_rate"]) for r in rows if "eval/success_rate" in r]
            if ev:
                ax.plot(*zip(*ev, strict=True), marker="o", label="evaluation")
                ax.legend()
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("iteration")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    return True


class _NoBar:
    """Stands in for a tqdm bar when there is none."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(show: bool, total: int, start: int = 0, desc: str = "tgrpo") -> Any:
    """A tqdm bar over ``total`` iterations starting at ``start``; a no-op object when ``show`` is False or
    tqdm is not installed."""
    if not show:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        log.info("tqdm is not installed; no progress bar.")
        return _NoBar()
    return tqdm(total=total, initial=start, desc=desc, unit="it", dynamic_ncols=True)
