"""The run directory: one run's output directory, its identity and the stages it times and caches.

:class:`RunDir` claims an output directory for one run (locked against a second writer), records the run's
identity (:func:`run_identity`, plus :func:`file_digest` of its input files and the demonstrations' content digest,
:func:`~libero_tgrpo.demo_set.demos_digest`) in :data:`RUN_RECORD`, refuses to resume a run with other settings,
and runs each stage timed, reading a finished stage's result back from disk when resuming instead of running it
again. The stages themselves are in :mod:`libero_tgrpo.stages`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.demo_set import DemoSet, demos_digest
from libero_tgrpo.files import LOCK_NAME, DirLock, RunDirError, check_writable, write_json, write_text
from libero_tgrpo.options import command_line, save_config
from libero_tgrpo.progress import say as _default_say
from libero_tgrpo.stage_configs import EXPERT_CLOSE_STEPS, EXPERT_LIFT
from libero_tgrpo.versions import now

__all__ = ["RunDir", "RunDirError", "run_identity", "file_digest", "RUN_RECORD", "NOT_IDENTITY"]

T = TypeVar("T")
Say = Callable[[str], None]


RUN_RECORD = "run.json"
"""The file of a run directory that names its run: the command, the identity (the options and file digests that
decide its results) and when it was started."""

NOT_IDENTITY = frozenset({"output_dir", "resume", "resume_or_start", "overwrite", "progress", "video",
                          "vectorization", "ray_address", "rl.iterations", "demos.demo_cache", "demos.workers",
                          "video_interval", "snapshot_interval", "rl.log_formats", "hf.static_cache",
                          "hf.compile_decoding", "hf.compile_prefill", "hf.merged_sampling"})
"""Options that may change when a run is resumed: where and how it runs (local or Ray envs, the cluster), how long
RL goes on and what it logs on the way (sinks, videos, snapshots), how a Hugging Face model decodes (the static
KV cache and merged sampling give the dynamic cache's tokens, up to rounding), not what it computes (the demonstrations'
content is compared by its digest, not by where the cache lies)."""

ADDED_LATER: dict[str, Any] = {"demos.expert_close_steps": EXPERT_CLOSE_STEPS, "demos.expert_lift": EXPERT_LIFT,
                               "select": "final", "select_placements": 30, "select_points": 3}
"""Identity keys added after runs had been recorded, with the value every such run had: a record without the key
reads as that value, so that those runs can still be resumed."""

_LEGACY_MARKERS = ("config.json", "command.txt", "checkpoint.pt", "metrics.jsonl", "metrics.csv", "policy.pt",
                   "eval.json", "summary.json")
"""Files by which a run directory of an earlier version (no ``run.json``) is recognised."""


def run_identity(cfg: PipelineConfig, visible: frozenset[str] | None = None, **extra: Any) -> dict[str, Any]:
    """The values that decide a run's results, flat (``"rl.lr"``): every option of ``cfg`` (those of
    ``visible`` for a subcommand that offers only some) except :data:`NOT_IDENTITY`, the resolved alphas, and
    ``extra`` (e.g. the command's own arguments)."""
    from libero_tgrpo.options import options_dict

    flat: dict[str, Any] = {}
    for key, value in options_dict(cfg).items():
        if visible is not None and key not in visible:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    if visible is None or "method" in visible:
        flat["alphas"] = list(cfg.alphas)
    flat.update(extra)
    return {k: v for k, v in json.loads(json.dumps(flat, default=str)).items() if k not in NOT_IDENTITY}


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's content; of a directory (a LeRobotDataset), of its files' relative paths and
    contents in sorted order."""
    root = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
    for file in files:
        if root.is_dir():
            h.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


class RunDir:
    """The output directory of one run: every stage's result lands here, timed; ``resume`` reuses finished ones.

    A directory belongs to one run. Opening it takes an exclusive lock (:class:`~libero_tgrpo.files.DirLock`:
    a second writer is refused at once, naming the holder's pid; the OS frees the lock when the process dies)
    and then:

    * a new run refuses a directory that holds another run, unless ``overwrite`` (which first removes every
      file of the old run) or ``resume``;
    * ``resume`` continues the run there when its recorded identity (:func:`run_identity`, plus the digests
      given to :meth:`check_digest`) equals this one, and refuses naming every field that differs, with its
      old and new values; with nothing to resume it is an error unless ``start_if_missing``.

    The record is ``run.json``. Use it as a context manager (or call :meth:`close`) to release the lock.

    Args:
        root: the directory (created).
        resume: continue the run in the directory, reusing the results of stages that are already on disk.
        say: where progress lines go.
        command: the command that writes the directory (``run``, ``sft``, ``train``, ``eval``).
        identity: the values that decide the run's results (:func:`run_identity`).
        overwrite: remove the run the directory holds and start a new one.
        start_if_missing: with ``resume``, start a new run when the directory holds none.
        inputs: files or directories the run reads; ``overwrite`` refuses to remove a directory that holds one.

    Raises:
        RunDirError: the directory holds another run (or one that does not match, or nothing to resume).
        DirLockedError: another process writes the directory.
        OSError: the directory cannot be written.
    """

    def __init__(
        self,
        root: str | Path,
        resume: bool = False,
        say: Say = _default_say,
        *,
        command: str = "run",
        identity: dict[str, Any] | None = None,
        overwrite: bool = False,
        start_if_missing: bool = False,
        inputs: Sequence[str | Path] = (),
    ) -> None:
        if resume and overwrite:
            raise RunDirError("resume and overwrite exclude each other: give one of --resume and --overwrite.")
        self.root = Path(root)
        self.say = say
        self.command = command
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._inputs = [Path(p) for p in inputs]
        check_writable(self.root)
        self._lock = DirLock(self.root).acquire()
        try:
            self.resume = self._claim(dict(identity or {}), resume, overwrite, start_if_missing)
        except BaseException:
            self._lock.release()
            raise

    # ---------------------------------------------------------------------------------------- ownership
    def _holds_run(self) -> bool:
        """Whether the directory holds a run: a record with results beside it (a record alone is a run that
        failed before it wrote anything), or the files of an earlier version's run."""
        if (self.root / RUN_RECORD).is_file():
            return any(p.name not in (RUN_RECORD, LOCK_NAME) for p in self.root.iterdir())
        return any((self.root / m).exists() for m in _LEGACY_MARKERS)

    def _claim(self, identity: dict[str, Any], resume: bool, overwrite: bool, start_if_missing: bool) -> bool:
        record_path = self.root / RUN_RECORD
        holds = self._holds_run()
        if resume and holds:
            record = json.loads(record_path.read_text()) if record_path.is_file() else None
            if record is None:
                self.say(f"{self.root} was written by an earlier version without {RUN_RECORD}: resuming without "
                         "checking that its options match")
                self.record = {"command": self.command, "identity": identity, "digests": {}, "started": now()}
            else:
                self._check_same_run(record, identity)
                self.record = record
            self._write_record()
            return True
        if resume and not start_if_missing:
            raise RunDirError(
                f"nothing to resume in {str(self.root)!r}: it holds no run. Run without --resume to start one, "
                "or give --resume-or-start to resume a run if there is one and start one otherwise."
            )
        if holds:
            if not overwrite:
                raise RunDirError(
                    f"{str(self.root)!r} holds another run. Give --resume to continue it, --overwrite to remove it "
                    "and start a new one, or another --output-dir."
                )
            self._remove_old_run()
        self.record = {"command": self.command, "identity": identity, "digests": {}, "started": now()}
        self._write_record()
        return False

    def _check_same_run(self, record: dict[str, Any], identity: dict[str, Any]) -> None:
        old_command = record.get("command")
        diffs = [] if old_command == self.command else [f"command: {old_command} -> {self.command}"]
        old = record.get("identity", {})
        for key in sorted(set(old) | set(identity), key=lambda k: (k.count("."), k)):
            if key in NOT_IDENTITY:
                continue
            a, b = old.get(key, ADDED_LATER.get(key, "(not set)")), identity.get(key, "(not set)")
            if a != b:
                diffs.append(f"{key}: {a!r} -> {b!r}")
        if diffs:
            raise RunDirError(
                f"cannot resume the run in {str(self.root)!r} with other settings ({'; '.join(diffs)}). Resume "
                "with the run's own options (its config.yaml / command.txt), or give --overwrite or another "
                "--output-dir for a new run."
            )

    def _remove_old_run(self) -> None:
        root = self.root.resolve()
        for p in self._inputs:
            if p.resolve() == root or root in p.resolve().parents:
                raise RunDirError(f"--overwrite would remove {str(p)!r}, an input of this run, with the old run in "
                                  f"{str(self.root)!r}: give another --output-dir.")
        self.say(f"--overwrite: removing the run in {self.root}")
        for entry in self.root.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _write_record(self) -> None:
        write_json(self.root / RUN_RECORD, self.record)

    def check_digest(self, name: str, path: str | Path, digest: str | None = None) -> str:
        """Record the digest of an input or intermediate file (``"init"``, ``"sft"``) in ``run.json``; on a
        resume, compare it with the recorded one.

        Args:
            name: the digest's name in the record.
            path: the file (or directory).
            digest: the input's digest when it is not the file's bytes (:meth:`check_demos`); None:
                :func:`file_digest` of ``path``. With a digest given, a resume also accepts a recorded
                :func:`file_digest` of ``path`` (what earlier versions recorded for every input) and records
                ``digest`` in its place.

        Raises:
            RunDirError: the file differs from the one the resumed run used.
        """
        of_content = digest is not None
        digest = digest if of_content else file_digest(path)
        digests = self.record.setdefault("digests", {})
        old = digests.get(name)
        if self.resume and old is not None and old != digest and not (of_content and old == file_digest(path)):
            raise RunDirError(
                f"cannot resume the run in {str(self.root)!r}: its {name} file differs from the one the run used "
                f"({name} digest: {old} -> {digest}, {path}). Give --overwrite or another --output-dir for a new run."
            )
        if old != digest:
            digests[name] = digest
            self._write_record()
        return digest

    def check_demos(self, demos: DemoSet, path: str | Path) -> str:
        """:meth:`check_digest` of the demonstrations as ``"demos"``, by their content (:func:`demos_digest` of
        ``demos``, read from ``path``), not by the file's bytes: a cache file regenerated with the same episodes
        (its generation time differs), or the same episodes written again with other metadata, resumes the run;
        one changed value refuses it. This holds for every demonstrations format (``.npz``, LeRobotDataset,
        HDF5): the loaders give the episodes anyway. A run recorded by an earlier version holds the file's
        digest (:func:`file_digest`): it is accepted when it is that of ``path``, and replaced by the content
        digest.

        Raises:
            RunDirError: the episodes differ from the ones the resumed run used.
        """
        return self.check_digest("demos", path, demos_digest(demos))

    def close(self) -> None:
        """Release the directory's lock."""
        self._lock.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- stages
    def elapsed(self) -> float:
        """Seconds since the run directory was opened (rounded to 10 ms)."""
        return round(time.perf_counter() - self._t0, 2)

    def write_config(self, cfg: PipelineConfig, command: str = "run") -> None:
        """Record the run's resolved config: ``config.json`` (every value, with the resolved alphas),
        ``config.yaml`` (read back by ``--config``) and ``command.txt`` (the command line that gives it)."""
        write_json(self.root / "config.json", cfg.to_dict())
        save_config(cfg, self.root / "config.yaml", command)
        write_text(self.root / "command.txt", command_line(cfg, command) + "\n")

    def stage(
        self,
        name: str,
        compute: Callable[[], T],
        *,
        done: Sequence[str | Path] = (),
        load: Callable[[], T] | None = None,
        save: Callable[[T], Any] | None = None,
    ) -> T:
        """Run one stage, timed (``timings[name]``).

        Args:
            name: the stage's name in the timings and the log.
            compute: runs the stage and returns its result.
            done: files (relative to the run directory) that hold a finished result; with ``resume`` and all of
                them on disk, ``load()`` gives the result instead of ``compute()``.
            load: reads the finished result back.
            save: writes the result after ``compute()``.
        """
        t0 = time.perf_counter()
        paths = [self.root / p for p in done]
        if self.resume and load is not None and paths and all(p.is_file() for p in paths):
            self.say(f"{name}: reusing {paths[0]}")
            value = load()
        else:
            value = compute()
            if save is not None:
                save(value)
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.say(f"stage {name}: {self.timings[name]:.1f}s")
        return value

    def json_stage(self, name: str, filename: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A stage whose result is one JSON file ``filename`` in the run directory."""
        path = self.root / filename
        return self.stage(name, compute, done=[filename], load=lambda: json.loads(path.read_text()),
                          save=lambda value: write_json(path, value))
