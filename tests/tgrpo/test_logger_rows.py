"""Metric rows across resumes: every sink keeps each finished iteration exactly once (none lost, none twice)."""

import csv
import json

import pytest
from tgrpo_fakes import make_vec_env, small_config

import tgrpo
from tgrpo.logger import MetricsLogger


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("formats", [("csv",), ("jsonl", "csv"), ("jsonl",)])
def test_a_resumed_run_keeps_every_row_once(tmp_path, formats):
    out = tmp_path / "run"
    first = tgrpo.train(make_vec_env(2), None, small_config(tmp_path, iterations=2, log_formats=formats))
    written = {f: (out / f"metrics.{f}").read_text() for f in formats}
    resumed = tgrpo.train(make_vec_env(2), None,
                          small_config(tmp_path, iterations=4, log_formats=formats, resume=True))
    assert [r["iteration"] for r in resumed.history] == [0, 1, 2, 3]
    assert resumed.history[:2] == first.history  # the rows before the resume, as they were logged
    if "csv" in formats:
        rows = _csv_rows(out / "metrics.csv")
        assert [int(r["iteration"]) for r in rows] == [0, 1, 2, 3]
        assert rows[:2] == _csv_rows_from_text(written["csv"])
    if "jsonl" in formats:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["iteration"] for line in lines] == [0, 1, 2, 3]
        assert lines[:2] == written["jsonl"].splitlines()


def _csv_rows_from_text(text):
    return list(csv.DictReader(text.splitlines()))


def test_csv_rows_read_back_as_logged(tmp_path):
    rows = [{"iteration": 0, "charts/success_rate": 0.1 + 0.2, "losses/kl": 1e-17},
            {"iteration": 1, "charts/success_rate": 0.5, "eval/success_rate": 1.0}]
    logger = MetricsLogger(tmp_path, ("csv",))
    for row in rows:
        logger.write(row)
    logger.close()
    # a resume after iteration 1 keeps both rows with their exact values (the missing cell stays missing)
    assert MetricsLogger(tmp_path, ("csv",), start_iteration=2).rows == rows
    # a resume after iteration 0 drops the later row from the file as well
    MetricsLogger(tmp_path, ("csv",), start_iteration=1).close()
    assert [r["iteration"] for r in _csv_rows(tmp_path / "metrics.csv")] == ["0"]
    # a fresh start (iteration 0) leaves no row of the earlier run
    MetricsLogger(tmp_path, ("csv",)).close()
    assert not (tmp_path / "metrics.csv").exists()


def test_csv_is_written_through_a_temporary_file_of_its_own(tmp_path):
    # another writer's temporary file at a shared name (here: one it is still writing) does not disturb this one
    (tmp_path / "metrics.csv.tmp").mkdir()
    logger = MetricsLogger(tmp_path, ("csv",))
    logger.write({"iteration": 0, "x": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.csv.tmp"]  # none of its own left
