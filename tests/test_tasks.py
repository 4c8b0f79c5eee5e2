"""The task-study registry, the ``structattn task`` command and the digits loader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from structattn.cli import main
from structattn.studies import tasks
from structattn.studies.digits import load_digits_split
from structattn.studies.tasks import TaskResult, get_task, register_task, run_task


@pytest.fixture
def toy_task():
    calls = []

    @register_task("toy-task", description="a toy task", default_seeds=(3, 4))
    def _toy(*, seeds, quick, out_dir, progress):
        calls.append((seeds, quick))
        figure = out_dir / "toy.txt"
        figure.write_text("figure")
        rows = [{"seed": s, "value": np.float64(s) / 2} for s in seeds]
        return TaskResult(records=rows, summary="| seed |\n|---|\n", figures=[figure],
                          metadata={"answer": np.int64(42)})

    yield calls
    tasks._TASKS.pop("toy-task", None)


def test_run_task_writes_records_summary_and_metadata(toy_task, tmp_path):
    result = run_task("toy-task", quick=True, out_dir=tmp_path / "out")
    assert toy_task == [((3, 4), True)]
    lines = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"seed": 3, "value": 1.5},
                                                    {"seed": 4, "value": 2.0}]
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["answer"] == 42 and meta["seeds"] == [3, 4] and meta["quick"] is True
    assert (tmp_path / "out" / "summary.md").read_text().startswith("| seed |")
    assert result.records[0]["seed"] == 3


def test_registry_refuses_bad_names_and_duplicates(toy_task):
    with pytest.raises(ValueError, match="name"):
        register_task("bad name", description="x")
    with pytest.raises(ValueError, match="already registered"):
        register_task("toy-task", description="again")(lambda **kw: None)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="seeds"):
        run_task("toy-task", seeds=[-1])


def test_cli_task_list_run_and_errors(toy_task, tmp_path, capsys):
    assert main(["task", "--list"]) == 0
    assert "toy-task" in capsys.readouterr().out
    assert main(["task", "toy-task", "--seeds", "5", "--quick", "--out",
                 str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "1 records" in out and "toy.txt" in out
    assert main(["task", "unknown-task"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["task"]) == 2


def test_digits_split_is_real_stratified_and_deterministic():
    pytest.importorskip("sklearn")
    a = load_digits_split(0, as_torch=False)
    b = load_digits_split(0, as_torch=False)
    c = load_digits_split(1, as_torch=False)
    assert a.x_train.shape == (1347, 1, 8, 8) and a.x_test.shape == (450, 1, 8, 8)
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_test, c.y_test) or not np.array_equal(a.x_test, c.x_test)
    # every class in both splits, in proportion
    counts = np.bincount(a.y_test, minlength=10)
    totals = counts + np.bincount(a.y_train, minlength=10)
    np.testing.assert_array_equal(counts, np.round(0.25 * totals).astype(int))
    # the images are real digits: not constant, with the 16 grey levels of the data set
    assert len(np.unique(a.x_train)) == 17
    # no image is both in train and in test
    train = {x.tobytes() for x in a.x_train}
    assert sum(x.tobytes() in train for x in a.x_test) < 10  # the data set has a few duplicates


def test_digits_split_torch_and_bad_input():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    split = load_digits_split(2)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    with pytest.raises(ValueError, match="seed"):
        load_digits_split(-1)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(0, test_fraction=1.5)
