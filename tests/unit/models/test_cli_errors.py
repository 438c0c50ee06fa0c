"""``modelpool models ...``: input a user can fix ends with one line naming it and status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelpool.models.cli import main


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
