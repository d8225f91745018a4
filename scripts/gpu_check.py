"""Checks that need a GPU, in one prepared run (device time is scarce: run it once, read it all).

    python scripts/gpu_check.py [--out DIR]

Runs the quickstart sample under ``torchdiag.profile()`` on the GPU and checks the record:
NVML series present, GPM metrics where the GPU supports them, CUDA kernels in the profiler
window summary, the window's memory categories on the GPU, and that ``torchdiag report`` renders
every format. Then a CUDA out-of-memory inside a block: the allocator's observer must have read
the allocator's state before the stack unwound, and the report must lead with it. Prints one
PASS/FAIL line per check and exits non-zero if any failed. Results land in ``DIR/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gpm_supported() -> bool | None:
    """Whether NVML reports GPM support on device 0 (None when NVML itself fails)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return bool(pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append((name, bool(ok), detail))
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)

    import torch

    check("cuda available", torch.cuda.is_available(), torch.__version__)
    if not torch.cuda.is_available():
        return 1
    record_path = args.out / "quickstart" / "run.json"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "samples" / "quickstart.py"),
            "--output",
            str(record_path),
            "--steps",
            "40",
            "--batch-size",
            "128",
            "--image-size",
            "112",
            "--workers",
            "4",
            "--trace",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    results["quickstart_s"] = round(time.perf_counter() - t0, 1)
    check("quickstart ran", proc.returncode == 0, proc.stderr[-800:] if proc.returncode else "")
    if proc.returncode:
        return 1

    sys.path.insert(0, str(ROOT))
    from torchdiag.record import load_record

    record = load_record(record_path)
    samples = record.samples
    gpus = samples.gpus if samples else []
    util = [v for g in gpus for v in g.utilization_pct if v is not None]
    check("NVML series", bool(util), f"{len(util)} utilisation values, gpus={len(gpus)}")
    results["collectors"] = {k: v.reason or "ok" for k, v in record.collectors.items()}
    supported = gpm_supported()
    gpm_values = [
        v
        for g in gpus
        if g.gpm
        for v in g.gpm.tensor_active_pct + g.gpm.sm_active_pct
        if v is not None
    ]
    if supported:
        check("GPM series (GPU supports GPM)", bool(gpm_values), f"{len(gpm_values)} values")
    else:
        check(
            "GPM reported unavailable",
            not record.collectors.get("gpm", None) or not record.collectors["gpm"].available,
            f"support={supported}",
        )
    summary = record.profiler.summary if record.profiler else None
    kernels = summary.kernel_count if summary else 0
    check("CUDA kernels in the window summary", kernels > 0, f"{kernels} kernels")
    if summary is not None:
        results["window"] = {
            "steps": len(summary.steps),
            "gpu_busy_ms": summary.gpu_busy_ms,
            "top_kernels": [k.name[:80] for k in summary.top_kernels[:5]],
        }
    trace_files = list(record_path.parent.glob("*.pt.trace.json.gz"))
    check("raw trace kept", bool(trace_files), ", ".join(p.name for p in trace_files))
    for fmt in ("html", "md", "json", "text"):
        out = args.out / f"quickstart.{fmt}"
        rc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torchdiag",
                "report",
                str(record_path),
                "--format",
                fmt,
                "-o",
                str(out),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        check(
            f"report --format {fmt}",
            rc.returncode == 0 and out.stat().st_size > 0,
            rc.stderr[-300:],
        )
    categories = record.profiler.memory_categories if record.profiler else None
    check(
        "memory categories on the GPU",
        categories is not None
        and categories.device.startswith("cuda")
        and categories.peak_bytes > 0,
        f"{categories.device}: {categories.at_peak}" if categories is not None else "none",
    )
    out_of_memory_check(args.out, check)
    results["checks"] = [{"name": n, "ok": ok, "detail": d} for n, ok, d in checks]
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0 if all(ok for _, ok, _ in checks) else 1


def out_of_memory_check(out: Path, check: Callable[[str, bool, str], None]) -> None:
    """A request twice the device's memory inside a block: the exception passes through, the
    record is failed with the observer's reading, and the analysis leads with out-of-memory."""
    import torch

    import torchdiag
    from torchdiag.analyze.registry import analyze
    from torchdiag.view.run_view import RunView

    total = torch.cuda.get_device_properties(0).total_memory
    raised = None
    run = None
    try:
        with torchdiag.profile(out / "oom" / "run.json", profile_steps=0) as run:
            keep = torch.empty(2**28, dtype=torch.uint8, device="cuda")  # 256 MiB in use
            torch.empty(2 * total, dtype=torch.uint8, device="cuda")
            del keep
    except torch.OutOfMemoryError as err:
        raised = err
    check("CUDA out-of-memory passed through", raised is not None, type(raised).__name__)
    record = run.record if run is not None else None
    oom = record.status.out_of_memory if record is not None else None
    check(
        "out-of-memory recorded by the allocator's observer",
        oom is not None and oom.observed == "allocator" and (oom.allocated_bytes or 0) >= 2**28,
        repr(oom),
    )
    if record is not None:
        findings = analyze(RunView(record)).findings
        lead = findings[0].id if findings else None
        check("report leads with out-of-memory", lead == "out-of-memory", str(lead))
    torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
