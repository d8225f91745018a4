"""Privacy by default: a record (and every report made from it) keeps the script's file name, not
its folder, the host only as a short hash, and no secret values from the command line."""

from __future__ import annotations

import socket
import sys

import pytest
import torch
from viewing import analyzed

import torchdiag
from torchdiag.capture.privacy import REDACTED, host_label, redact_argv
from torchdiag.record import load_record
from torchdiag.report.html import render_html

SECRET = "sk-live-0123456789abcdef"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/home/alice/x/train.py", "--lr", "0.1"], ["train.py", "--lr", "0.1"]),
        (["t.py", "--api-key", SECRET], ["t.py", "--api-key", REDACTED]),
        (["t.py", "--wandb-api-key=abc"], ["t.py", f"--wandb-api-key={REDACTED}"]),
        (["t.py", "--hf_token", "x"], ["t.py", "--hf_token", REDACTED]),
        (["t.py", "db.password=hunter2"], ["t.py", f"db.password={REDACTED}"]),
        (["t.py", "--auth", "u:p", "--epochs", "3"], ["t.py", "--auth", REDACTED, "--epochs", "3"]),
        (["t.py", "ghp_abcdefghijklmnopqrstuvwx"], ["t.py", REDACTED]),
        # Words that merely contain a secret-looking part are left alone.
        (
            ["t.py", "--keyboard", "us", "--monkey", "m"],
            ["t.py", "--keyboard", "us", "--monkey", "m"],
        ),
    ],
)
def test_redact_argv(argv, expected):
    assert redact_argv(argv) == expected


def test_host_label_is_short_stable_and_not_the_name():
    label = host_label("gpu-node-17.cluster.example.com")
    assert label == host_label("gpu-node-17.cluster.example.com")
    assert label.startswith("host-") and len(label) == 13 and "gpu-node" not in label
    assert host_label("") == ""


def _capture(tmp_path, monkeypatch, **options):
    argv = ["/home/alice/secret-project/train.py", "--api-key", SECRET, "--lr", "0.1"]
    monkeypatch.setattr(sys, "argv", argv)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, **options) as run:
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
    return load_record(run.path), (tmp_path / "run.json").read_text()


def test_records_and_reports_are_redacted_by_default(tmp_path, monkeypatch):
    record, text = _capture(tmp_path, monkeypatch)
    host = socket.gethostname()
    assert record.environment.argv == ["train.py", "--api-key", REDACTED, "--lr", "0.1"]
    assert record.environment.hostname == host_label(host)
    page = render_html(*analyzed(record))
    for leaked in (SECRET, "/home/alice", "secret-project"):
        assert leaked not in text and leaked not in page
    if len(host) > 4:
        assert host not in text


def test_redact_false_keeps_everything(tmp_path, monkeypatch):
    record, _ = _capture(tmp_path, monkeypatch, redact=False)
    assert record.environment.argv[0] == "/home/alice/secret-project/train.py"
    assert SECRET in record.environment.argv
    assert record.environment.hostname == socket.gethostname()
