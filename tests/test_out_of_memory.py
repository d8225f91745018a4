"""Out-of-memory: recognised in the allocator's messages, recorded when it ends the block (the
exception passes through unchanged), and leading the report as a blocking finding."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import torchdiag
from torchdiag.analyze.finding import Finding, rank_findings
from torchdiag.analyze.registry import analyze
from torchdiag.capture import out_of_memory as oom_mod
from torchdiag.capture.out_of_memory import (
    OomObserver,
    describe,
    is_out_of_memory,
    parse_message,
)
from torchdiag.record import (
    Environment,
    OptimizerInfo,
    OutOfMemory,
    ParameterInfo,
    RunRecord,
    RunStatus,
    SourceLine,
    load_record,
)
from torchdiag.report.html import render_html
from torchdiag.report.markdown import render_markdown
from torchdiag.report.text import render_text
from torchdiag.report.verdict import verdict
from torchdiag.view.run_view import RunView

CPU_MESSAGE = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 35184372088832 bytes. Error code 12 (Cannot allocate memory)"
)
CUDA_MESSAGE = (
    "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.10 GiB "
    "of which 3.19 MiB is free. Process 4242 has 79.09 GiB memory in use. Including non-PyTorch "
    "memory, this process has 79.09 GiB memory in use. Of the allocated memory 70.50 GiB is "
    "allocated by PyTorch, and 8.25 GiB is reserved by PyTorch but unallocated. If reserved but "
    "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
    "to avoid fragmentation.  See documentation for Memory Management  "
    "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)
OLD_CUDA_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 MiB (GPU 1; 15.78 GiB total capacity; 14.56 GiB "
    "already allocated; 1.44 MiB free; 14.59 GiB reserved in total by PyTorch)"
)
GIB = 2**30


# -- messages ---------------------------------------------------------------------------------


def test_cpu_allocator_message() -> None:
    oom = parse_message(CPU_MESSAGE)
    assert oom.device == "cpu"
    assert oom.requested_bytes == 35184372088832


def test_cuda_message() -> None:
    oom = parse_message(CUDA_MESSAGE)
    assert oom.device == "cuda:0"
    assert oom.requested_bytes == 20 * 2**20
    assert oom.capacity_bytes == int(79.10 * GIB)
    assert oom.free_bytes == int(3.19 * 2**20)
    assert oom.process_bytes == int(79.09 * GIB)
    assert oom.allocated_bytes == int(70.50 * GIB)
    assert oom.reserved_bytes == int(70.50 * GIB) + int(8.25 * GIB)


def test_older_cuda_message() -> None:
    oom = parse_message(OLD_CUDA_MESSAGE)
    assert oom.device == "cuda:1"
    assert oom.requested_bytes == 2 * 2**20
    assert oom.allocated_bytes == int(14.56 * GIB)
    assert oom.reserved_bytes == int(14.59 * GIB)
    assert oom.free_bytes == int(1.44 * 2**20)


def test_which_exceptions_are_out_of_memory() -> None:
    assert is_out_of_memory(RuntimeError, CPU_MESSAGE)
    assert is_out_of_memory(torch.OutOfMemoryError, "anything")
    assert is_out_of_memory(torch.cuda.OutOfMemoryError, CUDA_MESSAGE)
    assert is_out_of_memory(MemoryError, "")
    assert not is_out_of_memory(RuntimeError, "shape mismatch")
    assert not is_out_of_memory(KeyboardInterrupt, CPU_MESSAGE)  # stopped, not failed
    assert not is_out_of_memory(None, "")


# -- capture ----------------------------------------------------------------------------------


def _fail_allocation() -> None:
    torch.empty(2**45, dtype=torch.uint8)  # 32 TiB: the CPU allocator refuses it at once


def test_an_oom_in_the_block_passes_through_and_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    with pytest.raises(RuntimeError) as info:
        with torchdiag.profile(out, profile_steps=0) as run:
            try:
                _fail_allocation()
            except RuntimeError as err:
                raised, tb = err, err.__traceback__
                raise
    assert info.value is raised  # the same object ...
    assert info.value.__traceback__ is not None
    frames = []
    t = info.value.__traceback__
    while t is not None:
        frames.append(t.tb_frame.f_code.co_name)
        t = t.tb_next
    assert "_fail_allocation" in frames  # ... its traceback intact down to the failing line
    assert tb is not None
    record = load_record(out)
    assert run.record is not None
    assert record.status.state == "failed"
    oom = record.status.out_of_memory
    assert oom is not None
    assert oom.device == "cpu"
    assert oom.requested_bytes == 2**45
    assert oom.step == 1
    assert oom.source is not None
    assert oom.source.file == "test_out_of_memory.py"  # redacted: the name, not the folder
    assert oom.source.function == "_fail_allocation"
    assert "torch.empty(2**45" in oom.source.code
    assert oom.capacity_bytes and oom.process_bytes and oom.free_bytes is not None
    assert "oom_observer" not in record.collectors  # no CUDA here: nothing to say


def test_other_failures_have_no_oom_details(tmp_path: Path) -> None:
    with pytest.raises(ValueError), torchdiag.profile(tmp_path / "run.json", profile_steps=0):
        raise ValueError("not memory")
    record = load_record(tmp_path / "run.json")
    assert record.status.state == "failed"
    assert record.status.out_of_memory is None


def test_the_observer_keeps_the_state_before_the_unwind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The allocator calls the trampoline inside the failing allocation; faked here on CPU."""
    figures = {"allocated_bytes": 60 * GIB, "reserved_bytes": 75 * GIB}
    figures["inactive_split_bytes"] = 9 * GIB
    monkeypatch.setattr(oom_mod, "cuda_figures", lambda device: dict(figures))
    observer = OomObserver()
    monkeypatch.setattr(oom_mod, "_target", observer.on_oom)
    oom_mod._trampoline(0, 20 * 2**20, 80 * GIB, 3 * 2**20)
    seen = observer.observation
    assert seen is not None and seen.requested == 20 * 2**20
    try:
        raise torch.OutOfMemoryError(CUDA_MESSAGE)
    except torch.OutOfMemoryError as err:
        oom = describe(err, observation=seen, redact=True, step=4, in_window=False)
    assert oom.observed == "allocator"
    assert oom.device == "cuda:0"
    assert oom.allocated_bytes == 60 * GIB  # the observer's figures, not the message's
    assert oom.inactive_split_bytes == 9 * GIB
    assert oom.free_bytes == 3 * 2**20
    # Once uninstalled the trampoline (which cannot be detached) forwards to nothing.
    observer.uninstall()
    assert oom_mod._target is None
    oom_mod._trampoline(0, 1, 2, 3)


def test_the_trampoline_never_raises_into_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: int) -> None:
        raise RuntimeError("observer bug")

    monkeypatch.setattr(oom_mod, "_target", broken)
    oom_mod._trampoline(0, 1, 2, 3)


def test_the_observer_is_not_installed_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert OomObserver().install() is False


# -- the rule and the report ------------------------------------------------------------------


def _record(oom: OutOfMemory, **environment: object) -> RunRecord:
    return RunRecord(
        name="train.py",
        status=RunStatus(
            state="failed",
            exception_type="OutOfMemoryError",
            message=CUDA_MESSAGE,
            out_of_memory=oom,
        ),
        environment=Environment(**environment),  # type: ignore[arg-type]
    )


def _cuda_oom(**fields: object) -> OutOfMemory:
    base = parse_message(CUDA_MESSAGE)
    base.source = SourceLine(file="train.py", line=42, function="main", code="loss = model(x)")
    base.step = 3
    for key, value in fields.items():
        setattr(base, key, value)
    return base


def test_the_finding_names_the_request_and_leads_the_analysis() -> None:
    analysis = analyze(RunView(_record(_cuda_oom())))
    top = analysis.findings[0]
    assert top.id == "out-of-memory"
    assert top.severity == "critical" and top.blocking
    assert top.title == "out of memory: a 20.0 MiB request on cuda:0 failed at train.py:42"
    assert top.evidence["requested_bytes"] == 20 * 2**20
    assert top.evidence["failed_at"] == "train.py:42 in main: loss = model(x)"
    # 8.25 GiB cached and unused: expandable segments comes first, with what it frees.
    assert top.recommendation.startswith(
        "Ranked by what each would free: (1) set PYTORCH_CUDA_ALLOC_CONF"
    )
    assert "expandable_segments" in top.snippet


def test_options_are_ranked_by_what_they_free() -> None:
    record = _record(
        # 10 MiB cached, less than the 20 MiB asked for: not worth a setting.
        _cuda_oom(reserved_bytes=int(70.50 * GIB) + 10 * 2**20),
        optimizers=[OptimizerInfo(class_name="AdamW", steps=2)],
        parameters=ParameterInfo(elements_by_dtype={"float32": 2**30}, devices=["cuda:0"]),
    )
    top = analyze(RunView(record)).findings[0]
    # Adam's two fp32 states: 8 GiB; 8-bit Adam frees three quarters of them, a measured saving
    # ranked above the options whose saving this run did not measure.
    assert "(1) a lighter optimizer: AdamW keeps 8.0 GiB of state" in top.recommendation
    assert "[frees 6.0 GiB]" in top.recommendation
    assert "expandable_segments" not in top.recommendation
    assert "not measured in this run" in top.recommendation


def test_a_request_larger_than_the_device_gets_one_fix() -> None:
    oom = OutOfMemory(device="cpu", requested_bytes=2**45, capacity_bytes=24 * GIB)
    top = analyze(RunView(_record(oom))).findings[0]
    assert top.title == "out of memory: a 32.0 TiB request on cpu failed"
    assert "(1) the request alone (32.0 TiB) is larger than all of the host's memory" in (
        top.recommendation
    )
    assert "(2)" not in top.recommendation


def test_no_finding_without_an_oom() -> None:
    record = RunRecord(status=RunStatus(state="failed", exception_type="ValueError"))
    ids = [f.id for f in analyze(RunView(record)).findings]
    assert "out-of-memory" not in ids
    skipped = [s.id for s in analyze(RunView(record)).skipped]
    assert "out-of-memory" not in skipped


def test_a_blocking_finding_ranks_above_any_saving() -> None:
    big = Finding(id="a", severity="critical", title="", evidence={}, recommendation="")
    big.saving_pct_max = 90.0
    oom = Finding(id="z", severity="critical", title="", evidence={}, recommendation="")
    oom.blocking = True
    assert [f.id for f in rank_findings([big, oom])] == ["z", "a"]


def test_reports_lead_with_it_and_escape_it() -> None:
    oom = _cuda_oom(
        source=SourceLine(file="train.py", line=7, function="f", code="x = f('<script>')")
    )
    view = RunView(_record(oom))
    analysis = analyze(view)
    assert verdict(view, analysis).startswith("out of memory: a 20.0 MiB request")
    text = render_text(view, analysis)
    assert "out-of-memory" in text
    assert "out of memory: a 20.0 MiB request on cuda:0 failed at train.py:7" in text
    markdown = render_markdown(view, analysis)
    assert "out of memory: a 20.0 MiB request on cuda:0 failed at train.py:7" in markdown
    html = render_html(view, analysis)
    assert "<script>')" not in html
    assert "&lt;script&gt;" in html
    assert "out of memory: a 20.0 MiB request on cuda:0 failed at train.py:7" in html


# -- torchdiag run ----------------------------------------------------------------------------

SCRIPT = """\
import torch

x = torch.ones(3)
y = torch.empty(2**45, dtype=torch.uint8)
print("unreachable")
"""


def test_torchdiag_run_on_a_script_that_runs_out_of_memory(tmp_path: Path) -> None:
    script = tmp_path / "train_oom.py"
    script.write_text(textwrap.dedent(SCRIPT))
    plain = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "torchdiag", "run", "--output", str(out / "run.json"), str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == plain.returncode == 1
    python_tb = plain.stderr[plain.stderr.index("Traceback") :]
    assert proc.stderr.endswith(python_tb)  # printed as python prints it
    record = load_record(out / "run.json")
    assert record.status.state == "failed"
    assert record.status.out_of_memory is not None
    assert record.status.out_of_memory.requested_bytes == 2**45
    title = "out of memory: a 32.0 TiB request on cpu failed at train_oom.py:4"
    assert title in proc.stdout
    report = subprocess.run(
        [sys.executable, "-m", "torchdiag", "report", str(out / "run.json"), "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert doc["findings"][0]["id"] == "out-of-memory"
    assert doc["findings"][0]["title"] == title


def test_a_failure_inside_the_profiler_window_shows_what_was_in_use_by_category(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    optimizer = torch.optim.AdamW(model.parameters())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        with torchdiag.profile(tmp_path / "run.json", skip_first=1, profile_steps=3) as run:
            for step in range(10):
                model(torch.randn(64, 256)).sum().backward()
                if step == 2:  # inside the window: steps 1-3
                    torch.empty(2**45, dtype=torch.uint8)
                optimizer.step()
                optimizer.zero_grad()
    record = run.record
    assert record is not None and record.status.out_of_memory is not None
    assert record.status.out_of_memory.in_profiler_window
    finding = analyze(RunView(record)).findings[0]
    assert finding.id == "out-of-memory"
    # The window's categories at the failure: the model's state exactly (AdamW: twice it).
    assert finding.evidence["in_use_gib:parameter"] == pytest.approx(params / GIB, abs=1e-3)
    assert finding.evidence["in_use_gib:optimizer_state"] == pytest.approx(
        2 * params / GIB, abs=1e-3
    )
