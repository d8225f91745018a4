"""Command-line errors: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import gzip

import pytest

from torchdiag.cli import main


@pytest.fixture
def run_cli(capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _one_line_error(err: str) -> None:
    assert err.count("\n") == 1, err
    assert err.startswith("torchdiag: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json at all",
        b'{"schema": "torchdiag.run/1", "steps": {"count": "x"}}',
        b'{"schema": "torchdiag.run/7"}',
        b"[1, 2, 3]",
        b'{"traceEvents": "nope"}',
    ],
)
def test_bad_files_give_one_line_and_status_2(tmp_path, run_cli, content):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    code, _, err = run_cli("report", str(bad), "--format", "json", "-o", "-")
    assert code == 2
    _one_line_error(err)


def test_corrupt_gzip(tmp_path, run_cli):
    bad = tmp_path / "t.json.gz"
    bad.write_bytes(gzip.compress(b'{"traceEvents": [{"ph": "X", "na')[:-7])
    code, _, err = run_cli("report", str(bad), "--format", "json", "-o", "-")
    assert code == 2
    _one_line_error(err)


def test_missing_file(tmp_path, run_cli):
    code, _, err = run_cli("report", str(tmp_path / "nope.json"))
    assert code == 2
    _one_line_error(err)
    assert "nope.json" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["report"],
        ["frobnicate"],
        ["report", "x.json", "--format", "pdf"],
        ["report", "--bogus"],
    ],
)
def test_usage_errors(run_cli, argv):
    code, _, err = run_cli(*argv)
    assert code == 2
    _one_line_error(err)
