"""The run record: round trip, validation errors, atomic writes, determinism."""

from __future__ import annotations

import json
import os

import pytest

from torchdiag.record import (
    SCHEMA,
    CollectorStatus,
    RecordError,
    RunRecord,
    RunStatus,
    StepSeries,
    decode_record,
    load_record,
    save_record,
)


def _record() -> RunRecord:
    return RunRecord(
        name="train.py",
        status=RunStatus(state="failed", exception_type="ValueError", message="bad <value>"),
        collectors={
            "nvml": CollectorStatus(available=False, reason="no GPU"),
            "a": CollectorStatus(available=True),
        },
        steps=StepSeries(
            detection="optimizer",
            count=2,
            total_wall_s=0.03,
            first_step=[0, 1],
            steps=[1, 1],
            start_s=[0.0, 0.01],
            wall_ms=[10.0, 20.0],
            input_wait_ms=[1.0, 2.0],
            max_wall_ms=[10.0, 20.0],
            profiled=[False, True],
        ),
    )


def test_round_trip(tmp_path):
    path = save_record(_record(), tmp_path / "sub" / "run.json")
    loaded = load_record(path)
    assert loaded == _record()
    assert json.loads(path.read_text())["schema"] == SCHEMA


def test_same_record_same_bytes():
    assert _record().to_json() == _record().to_json()
    keys = list(json.loads(_record().to_json())["collectors"])
    assert keys == sorted(keys)


def test_atomic_write_writes_through_what_is_not_a_regular_file(tmp_path):
    """A named pipe (as /dev/null or /dev/stdout) is written to, never replaced by a file; a
    symbolic link keeps pointing at the file it names, which is replaced."""
    import stat
    import threading

    from torchdiag.files import atomic_write

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    atomic_write(pipe, b"record")
    reader.join(timeout=30)
    assert received == [b"record"]
    assert stat.S_ISFIFO(pipe.lstat().st_mode)

    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_atomic_write_leaves_no_temp_files_and_normal_permissions(tmp_path):
    path = save_record(_record(), tmp_path / "run.json")
    save_record(_record(), path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    assert os.stat(path).st_mode & 0o044  # readable by group/others as with open()


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = save_record(_record(), tmp_path / "run.json")
    before = path.read_bytes()

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_record(RunRecord(name="other"), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"name": "x"}', "not a torchdiag run record"),
        ('{"schema": "torchdiag.run/9"}', "not supported"),
        ('{"schema": "torchdiag.run/1", "steps": {"count": "many"}}', "$.steps.count"),
        ('{"schema": "torchdiag.run/1", "status": {"state": "exploded"}}', "$.status.state"),
    ],
)
def test_validation_errors_are_clear(text, message):
    with pytest.raises(RecordError) as err:
        decode_record(text)
    assert message in str(err.value)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    data = json.loads(_record().to_json())
    data["a_field_from_the_future"] = {"x": 1}
    assert decode_record(json.dumps(data)) == _record()
