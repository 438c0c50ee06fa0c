"""``modelpool models ...``: input a user can fix ends with one line naming it and status 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelpool.models.cli import main
from unit.models.toy_models import rows, save_small, write_dataset


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["train", "--data", "/nonexistent"], "/nonexistent: no such file or folder"),
        (["export", "--trained", "/nonexistent"], "run `modelpool models train --out /nonexistent` first"),
        (
            ["train-scorer", "--trained", "/nonexistent", "--limit", "60"],
            "--trained /nonexistent: no small.json or small.npz; run `modelpool models train",
        ),
        (["profile", "--repository", "/nonexistent"], "--repository /nonexistent: no such folder"),
    ],
)
def test_missing_inputs_are_named_without_a_traceback(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", *argv]) == 2
    out, err = capsys.readouterr()
    assert f"modelpool models {argv[0]}: error: " in err and words in err, err
    assert "Traceback" not in err
    assert "cross-fitting" not in out  # refused before any work


def test_an_unreadable_data_set_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "wrong.csv"
    data.write_text("foo,bar\n1,2\n")
    assert main(["models", "train", "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "no 'text' column" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["train", "--limit", "-5"], "argument --limit: '-5' is not a whole number above 0"),
        (["profile", "--concurrency", "0"], "argument --concurrency: '0' is not a whole number above 0"),
        (["profile", "--requests", "x"], "argument --requests: 'x' is not a whole number above 0"),
        (["export", "--name", "a b"], "argument --name: 'a b': use only letters"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["models", *argv])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err


# --- refused before any work: labels, data sizes, repository contents (review findings) -----------


class _NoTriton:
    """Stands in for ``TritonProcess`` where no server may start; records what was asked."""

    started: ClassVar[list[list[str]]] = []
    log_line: ClassVar[str | None] = None

    def __init__(self, repository: Path, models: list[str] | None = None, **kwargs: Any) -> None:
        self.models = list(models or [])
        self.log_path = kwargs.get("log_path")
        self.pid = 1
        self.http_url = "http://127.0.0.1:9"

    def start(self) -> _NoTriton:
        _NoTriton.started.append(self.models)
        if _NoTriton.log_line is not None:  # what tritonserver does when a model fails to load
            if self.log_path is not None:
                self.log_path.write_text(f"I1124 starting\n{_NoTriton.log_line}\nI1124 stopping\n")
            raise RuntimeError("tritonserver exited with code 1 while starting:\n| server_version | 2.51.0 |")
        return self

    def stop(self) -> None:
        pass

    def __enter__(self) -> _NoTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def no_triton(monkeypatch: pytest.MonkeyPatch) -> type[_NoTriton]:
    import modelpool.devcluster.triton as triton

    _NoTriton.started = []
    _NoTriton.log_line = None
    monkeypatch.setattr(triton, "TritonProcess", _NoTriton)
    return _NoTriton


@pytest.fixture
def no_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Embedding texts (the first expensive step of train and train-scorer) is a test failure."""
    import modelpool.models.train as train

    class Refused:
        def __init__(self) -> None:
            raise AssertionError("work started before the input was validated")

    monkeypatch.setattr(train, "Embedder", Refused)


def _toy_repository(root: Path, labels: tuple[str, ...]) -> Path:
    from modelpool.models.export import export_variant
    from modelpool.models.runtime import Variant

    save_small(root / "trained", labels)
    export_variant(root / "trained", root / "repo", Variant.SMALL, "toy")
    return root / "repo"


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"modelpool models {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_profile_refuses_a_model_whose_labels_are_not_the_data_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_triton: type[_NoTriton]
) -> None:
    repo = _toy_repository(tmp_path, ("a", "b", "c"))
    data = write_dataset(tmp_path / "data", rows(["x", "y"], 3), rows(["x", "y"], 2, "t "))
    argv = ["models", "profile", "--repository", str(repo), "--data", str(data), "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, "profile")
    assert f"--repository {repo}" in line and f"--data {data}" in line and "toy-small" in line
    assert "3 labels ['a', 'b', 'c'] vs 2 labels ['x', 'y']" in line
    assert no_triton.started == [] and not (tmp_path / "p").exists()


def test_profile_refuses_labels_in_another_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_triton: type[_NoTriton]
) -> None:
    repo = _toy_repository(tmp_path, ("a", "b", "c"))
    data = write_dataset(tmp_path / "data", rows("abc", 2), rows("abc", 1, "t "))
    (data / "categories.json").write_text('["b", "a", "c"]')
    assert main(["models", "profile", "--repository", str(repo), "--data", str(data)]) == 2
    assert "the same 3 labels in another order" in _one_error_line(capsys.readouterr().err, "profile")
    assert no_triton.started == []


def test_profile_checks_models_against_the_repository_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_triton: type[_NoTriton]
) -> None:
    repo = _toy_repository(tmp_path, ("a", "b", "c"))
    data = write_dataset(tmp_path / "data", rows("abc", 2), rows("abc", 1, "t "))
    base = ["models", "profile", "--repository", str(repo), "--data", str(data)]
    assert main([*base, "--models", "toy-smal"]) == 2
    line = _one_error_line(capsys.readouterr().err, "profile")
    assert f"--models toy-smal: not in --repository {repo}, which holds toy-small" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["models", "profile", "--repository", str(empty), "--data", str(data)]) == 2
    assert f"--repository {empty}: no models in it" in _one_error_line(capsys.readouterr().err, "profile")
    assert no_triton.started == []


def test_profile_names_tritons_load_error_instead_of_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_triton: type[_NoTriton]
) -> None:
    repo = _toy_repository(tmp_path, ("a", "b", "c"))
    data = write_dataset(tmp_path / "data", rows("abc", 2), rows("abc", 1, "t "))
    no_triton.log_line = (
        "E1124 19:42:15.620120 8709 model_lifecycle.cc:654] \"failed to load 'toy-small' version 1: "
        "Internal: FileNotFoundError: [Errno 2] No such file or directory: 'small.npz'\\n\\nAt:\\n"
        '  /repo/toy-small/1/model.py(45): initialize\\n"'
    )
    assert main(["models", "profile", "--repository", str(repo), "--data", str(data)]) == 2
    line = _one_error_line(capsys.readouterr().err, "profile")
    assert "tritonserver could not load the models: failed to load 'toy-small' version 1" in line
    assert line.endswith("No such file or directory: 'small.npz'") and no_triton.started == [["toy-small"]]


def test_train_scorer_refuses_a_trained_model_of_other_labels_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_embedding: None
) -> None:
    save_small(tmp_path / "trained", ("a", "b", "c"))
    data = write_dataset(tmp_path / "data", rows(["x", "y"], 6), rows(["x", "y"], 2, "t "))
    out = tmp_path / "scorer"
    argv = ["train-scorer", "--trained", str(tmp_path / "trained"), "--data", str(data), "--out", str(out)]
    assert main(["models", *argv]) == 2
    err = capsys.readouterr().err
    line = _one_error_line(err, "train-scorer")
    assert f"--trained {tmp_path / 'trained'} and --data {data} disagree on the labels" in line
    assert "3 labels ['a', 'b', 'c'] vs 2 labels ['x', 'y']" in line
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "train-scorer"])
def test_a_limit_below_the_number_of_labels_is_refused_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_embedding: None
) -> None:
    save_small(tmp_path / "trained", tuple(f"l{i}" for i in range(5)))
    data = write_dataset(tmp_path / "data", rows([f"l{i}" for i in range(5)], 8), rows(["l0", "l1"], 2, "t "))
    out = tmp_path / "out"
    argv = [command, "--data", str(data), "--limit", "3", "--out", str(out)]
    if command == "train-scorer":
        argv += ["--trained", str(tmp_path / "trained")]
    assert main(["models", *argv]) == 2
    line = _one_error_line(capsys.readouterr().err, command)
    assert "--limit 3 is fewer than the 5 labels of data's training split: give --limit 5 or more" in line
    assert not out.exists()


def test_train_refuses_a_csv_whose_test_split_would_be_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_embedding: None
) -> None:
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("text,label\n" + "".join(f"t {i} {c},{c}\n" for i in range(2) for c in "abc"))
    assert main(["models", "train", "--data", str(tiny), "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert f"{tiny}: 6 rows leave the test split empty" in line and "at least 3 rows of some label" in line
    assert not (tmp_path / "out").exists()


def test_modelpool_shared_names_the_shared_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelpool.models import paths

    monkeypatch.setenv("MODELPOOL_SHARED", str(tmp_path))  # as tests/conftest.py and the benches read it
    assert paths.banking77_dir() == tmp_path / "data" / "datasets" / "banking77"


def test_a_missing_default_data_set_says_to_pass_data_or_set_modelpool_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_embedding: None
) -> None:
    monkeypatch.setenv("MODELPOOL_SHARED", str(tmp_path))
    assert main(["models", "train", "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert f"the default data set {tmp_path}/data/datasets/banking77 does not exist" in line
    assert "pass --data" in line and "set MODELPOOL_SHARED to the shared/ folder" in line


def test_an_installed_package_has_no_guessed_data_location(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelpool.models import paths
    from modelpool.models.data import DatasetError

    monkeypatch.delenv("MODELPOOL_SHARED", raising=False)
    installed = "/opt/venv/lib/python3.11/site-packages/modelpool/models/paths.py"
    monkeypatch.setattr(paths, "__file__", installed)
    with pytest.raises(DatasetError, match=r"pass --data .* or set MODELPOOL_SHARED"):
        paths.banking77_dir()
