"""dataloader-stall and dataloader-workers on constructed records."""

from __future__ import annotations

import pytest
from viewing import analyze_record

from torchdiag.record import (
    Environment,
    GpuSeries,
    HostSeries,
    LoaderInfo,
    RunRecord,
    Samples,
    StepSeries,
)


def _record(
    wall_ms: float,
    wait_ms: float,
    *,
    steps: int = 20,
    workers: int = 0,
    cores: int = 16,
    gpu_util: float | None = None,
    worker_cpu_pct: float | None = None,
    cpu_while_waiting: float | None = None,
) -> RunRecord:
    series = StepSeries(
        detection="optimizer",
        count=steps,
        total_wall_s=wall_ms * steps / 1e3,
        total_input_wait_s=wait_ms * steps / 1e3,
        first_step=list(range(steps)),
        steps=[1] * steps,
        start_s=[i * wall_ms / 1e3 for i in range(steps)],
        # The first step pays one-off costs; it must not sway the rules.
        wall_ms=[wall_ms * 50] + [wall_ms] * (steps - 1),
        input_wait_ms=[wall_ms * 49] + [wait_ms] * (steps - 1),
        max_wall_ms=[wall_ms] * steps,
        profiled=[False] * steps,
    )
    env = Environment(
        cpu_count_logical=cores,
        loaders=[
            LoaderInfo(
                loader_id=0,
                batch_size=64,
                num_workers=workers,
                wait_s=wait_ms * steps / 1e3,
                wait_cpu_s=None
                if cpu_while_waiting is None
                else cpu_while_waiting * wait_ms * steps / 1e3,
                iterator="_SingleProcessDataLoaderIter"
                if workers == 0
                else "_MultiProcessingDataLoaderIter",
            )
        ],
    )
    samples = None
    if gpu_util is not None or worker_cpu_pct is not None:
        samples = Samples(t_s=[0.0, 1.0], rows_merged=[1, 1])
        if gpu_util is not None:
            samples.gpus = [GpuSeries(index=0, utilization_pct=[gpu_util, gpu_util])]
        if worker_cpu_pct is not None:
            samples.host = HostSeries(
                worker_count=[workers, workers],
                workers_cpu_pct=[worker_cpu_pct * workers] * 2,
            )
    return RunRecord(steps=series, environment=env, samples=samples)


def _findings(record):
    return {f.id: f for f in analyze_record(record).findings}


def test_large_stall_is_critical_with_the_measured_share():
    found = _findings(_record(100.0, 60.0))
    stall = found["dataloader-stall"]
    assert stall.severity == "critical"
    assert stall.saving_pct_max == pytest.approx(60.0)
    assert stall.evidence["input_wait_share_pct"] == pytest.approx(60.0)
    assert "60%" in stall.title
    workers = found["dataloader-workers"]
    assert workers.severity == "critical"
    assert workers.evidence["num_workers"] == 0
    assert "num_workers=" in workers.snippet


def test_moderate_stall_is_a_warning():
    found = _findings(_record(100.0, 8.0))
    assert found["dataloader-stall"].severity == "warning"


def test_healthy_input_raises_nothing():
    found = _findings(_record(100.0, 0.5))
    assert "dataloader-stall" not in found
    assert "dataloader-workers" not in found


def test_first_step_startup_is_not_a_stall():
    # Only the first step waited (worker start-up): steady state is clean.
    found = _findings(_record(100.0, 0.0))
    assert "dataloader-stall" not in found


def test_busy_gpu_bounds_the_saving():
    # The host waits 30% of the step, but NVML says the GPU was busy 95% of the time: a faster
    # loader can reclaim at most the 5% the GPU sat idle.
    stall = _findings(_record(100.0, 30.0, gpu_util=95.0))["dataloader-stall"]
    assert stall.saving_pct_max == pytest.approx(5.0, abs=0.01)
    assert stall.severity == "warning"


def test_workers_without_spare_cores_are_not_blamed():
    # Three workers busy 95% of a core each and a loop working 60% of each step fill 3 cores.
    found = _findings(_record(100.0, 40.0, workers=3, cores=3, worker_cpu_pct=95.0))
    assert "dataloader-stall" in found
    assert "dataloader-workers" not in found


def test_busy_workers_with_spare_cores_suggest_more():
    found = _findings(_record(100.0, 40.0, workers=2, cores=16, worker_cpu_pct=98.0))
    finding = found["dataloader-workers"]
    # Two workers deliver a batch every 100 ms, so one takes 200 ms; four deliver one every
    # 50 ms, within the step's 60 ms of work: more would only cost memory.
    assert finding.evidence["batch_load_ms"] == pytest.approx(200.0)
    assert finding.evidence["suggested_num_workers"] == 4
    assert finding.evidence["num_workers"] == 2
    assert finding.saving_pct_max == pytest.approx(40.0)


def test_a_loader_that_waits_on_reads_gets_more_workers_than_cores():
    # 90 ms of each 100 ms step waits on a loader that computes 5% of that time (reads from
    # storage): 8 workers overlap their reads on 2 cores, a batch every 11.25 ms.
    finding = _findings(_record(100.0, 90.0, cores=2, cpu_while_waiting=0.05))["dataloader-workers"]
    assert finding.evidence["suggested_num_workers"] == 8
    assert finding.evidence["cpu_while_waiting_pct"] == pytest.approx(5.0)
    assert finding.saving_pct_max == pytest.approx(100 - 11.25, abs=0.05)  # rounded to 0.1
    assert finding.severity == "critical"


def test_a_loader_that_computes_is_held_to_the_cores():
    # The same wait spent computing: each step's 10 ms of work and a batch's 90 ms of computing
    # take 50 ms of 2 cores however many workers share them. Two workers reach that; more cannot.
    finding = _findings(_record(100.0, 90.0, cores=2, cpu_while_waiting=1.0))["dataloader-workers"]
    assert finding.evidence["suggested_num_workers"] == 2
    assert finding.saving_pct_max == pytest.approx(50.0)


def test_cores_cap_a_partly_computing_load():
    # A 90 ms load that computes half the time: per step 4 cores do 10 ms of the loop's work and
    # 45 ms of the batch's, 13.75 ms at best, which 7 workers reach (90 / 7 = 12.9 ms a batch).
    finding = _findings(_record(100.0, 90.0, cores=4, cpu_while_waiting=0.5))["dataloader-workers"]
    assert finding.evidence["suggested_num_workers"] == 7
    assert finding.saving_pct_max == pytest.approx(86.25, abs=0.05)  # rounded to 0.1


def test_idle_workers_waiting_on_reads_get_more():
    # Four workers, each busy 10% of a core, and the training process idle while it waits:
    # the workers wait on reads, and more of them overlap more reads.
    found = _findings(
        _record(100.0, 40.0, workers=4, cores=4, worker_cpu_pct=10.0, cpu_while_waiting=0.02)
    )
    finding = found["dataloader-workers"]
    assert finding.evidence["suggested_num_workers"] == 7  # a 400 ms load, 60 ms of work
    assert finding.evidence["num_workers"] == 4


def test_a_wait_spent_computing_in_the_training_process_is_not_the_workers():
    # With workers, a wait the training process spends on its CPU is its own work (receiving,
    # collating or pinning batches): more workers would not shorten it.
    found = _findings(
        _record(100.0, 40.0, workers=2, cores=16, worker_cpu_pct=98.0, cpu_while_waiting=0.9)
    )
    assert "dataloader-stall" in found
    assert "dataloader-workers" not in found


def test_idle_workers_point_elsewhere():
    found = _findings(_record(100.0, 40.0, workers=4, cores=16, worker_cpu_pct=10.0))
    assert "dataloader-workers" not in found


def test_no_steps_is_skipped_with_a_reason():
    analysis = analyze_record(RunRecord())
    skipped = {s.id: s.reason for s in analysis.skipped}
    assert "no steps" in skipped["dataloader-stall"]
    assert not analysis.findings
