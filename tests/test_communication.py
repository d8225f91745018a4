"""``comm-bound``: exposed collectives, from constructed windows and real distributed traces."""

from __future__ import annotations

import pytest
from test_rules import N, _absent, _finding, _skip_reason, _summary, _trace
from tracedata import EXTERNAL
from viewing import analyze_record

from torchdiag.traces.load import record_from_traces
from torchdiag.view.run_view import RunView


def _comm(comm_ms: float, overlap_ms: float, **fields):
    return _trace(
        _summary(
            window_comm_ms=comm_ms * N,
            window_comm_overlap_ms=overlap_ms * N,
            world_size=8,
            backend="nccl",
            **fields,
        )
    )


def test_exposed_communication_is_the_saving():
    # A 95 ms GPU-bound step with 30 ms of collectives, 10 of them beside compute.
    f = _finding(_comm(30.0, 10.0), "comm-bound")
    assert f.saving_pct_max == pytest.approx(20 / 95 * 100, abs=0.05)
    assert f.severity == "critical"
    assert f.evidence["communication_share_pct"] == pytest.approx(31.6)
    assert f.evidence["hidden_behind_compute_pct"] == pytest.approx(33.3)
    assert f.evidence["exposed_communication_ms_per_step"] == pytest.approx(20.0)
    assert f.evidence["world_size"] == 8 and f.evidence["backend"] == "nccl"
    assert "bucket_cap_mb" in f.recommendation and "no_sync" in f.snippet


def test_fully_overlapped_communication_is_fine():
    _absent(_comm(30.0, 30.0), "comm-bound")


def test_no_collectives_no_finding():
    _absent(_comm(0.0, 0.0), "comm-bound")


def test_fsdp_gets_prefetch_advice():
    f = _finding(_comm(30.0, 0.0, markers={"FullyShardedDataParallel": 4}), "comm-bound")
    assert "backward_prefetch" in f.recommendation


def test_cpu_only_trace_is_skipped():
    assert "no GPU" in _skip_reason(_trace(_summary(has_gpu=False)), "comm-bound")


@pytest.mark.parametrize(
    ("trace", "share", "hidden"),
    [
        ("hta/df_index_resolver.json.gz", 24.9, 0.0),  # V100 DDP: NCCL after the backward
        ("hta/nccl_data.json.gz", 29.8, 15.6),  # A100, 2 ranks
    ],
)
def test_real_distributed_traces(trace, share, hidden):
    record = record_from_traces(EXTERNAL / trace)
    numbers = RunView(record).headline
    assert numbers["comm_pct"] == pytest.approx(share, abs=0.1)
    assert numbers["comm_overlap_pct"] == pytest.approx(hidden, abs=0.1)
    found = {f.id: f for f in analyze_record(record).findings}
    assert found["comm-bound"].severity in ("warning", "critical")
    assert found["comm-bound"].evidence["communication_share_pct"] == pytest.approx(share, abs=0.1)
