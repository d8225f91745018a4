"""Which fixes ``torchdiag try --fix auto`` measures: those behind the baseline's own findings."""

from __future__ import annotations

import os

from torchdiag.analyze.finding import Finding
from torchdiag.analyze.registry import Analysis

# Finding id -> the fixes that address it and can be applied from outside the script. ``{workers}``
# is the worker count the finding suggests (else DEFAULT_WORKERS), ``{batch}`` the batch factor.
FIXES_FOR_FINDING: dict[str, tuple[str, ...]] = {
    "dataloader-stall": ("input-ceiling", "workers={workers}"),
    "dataloader-workers": ("workers={workers}",),
    "pin-memory": ("pin-memory",),
    "no-amp": ("amp=bf16",),
    "tf32-disabled": ("tf32",),
    "channels-last": ("channels-last",),
    "cudnn-benchmark": ("cudnn-benchmark",),
    "optimizer-not-fused": ("fused-optimizer",),
    "cpu-bound": ("compile",),
    "launch-overhead": ("compile",),
    "small-batch": ("batch=x{batch}",),
}
SERIOUS = ("critical", "warning")


def default_workers() -> int:
    """Workers to try when no finding suggests a number: half the cores, 2 to 8."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


def auto_fixes(analysis: Analysis) -> list[str]:
    """The fixes for the findings at warning or above, most valuable finding first, each once."""
    findings = [f for f in analysis.findings if f.severity in SERIOUS]
    values = {"workers": _suggested(findings, "suggested_num_workers") or default_workers()}
    values["batch"] = _suggested(findings, "batch_factor") or 2
    fixes: list[str] = []
    for finding in findings:
        for template in FIXES_FOR_FINDING.get(finding.id, ()):
            spec = template.format(**values)
            if spec not in fixes:
                fixes.append(spec)
    return fixes


def _suggested(findings: list[Finding], key: str) -> int | None:
    for finding in findings:
        value = finding.evidence.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return None
