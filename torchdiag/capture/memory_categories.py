"""What filled memory in the profiler window, by category, from torch's memory categoriser.

torch.profiler (with ``record_shapes`` and ``profile_memory``) can file every allocation of the
window under a category (parameter, gradient, optimizer state, activation, input, temporary,
autograd detail, or unknown) in its private ``torch.profiler._memory_profiler``. That API is
private and may change or fail on any torch version: every call here is guarded by the caller,
and a failure only marks the ``memory_categories`` collector unavailable.

torch's categoriser guesses the model's state from the data flow (its Python tracer, needed to
see parameters and optimizer state directly, runs only with ``with_stack``): it files optimizer
state and some of the optimizer's own intermediates under "parameter". The live capture knows the
model and the optimizers, so the model's state at the peak is corrected with exact figures
(:func:`correct`); what torch filed as model state beyond them goes to "unknown".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torchdiag.record import MEMORY_CATEGORIES, MemoryCategories, MemoryOp

# Points of the stored timeline (the chart needs no more; the peak is always one of them).
MAX_POINTS = 400
# Operators kept in ``top_at_peak``.
TOP_OPS = 10

# torch's Category names (None: unknown) to ours.
_TORCH_NAMES = {
    "INPUT": "input",
    "TEMPORARY": "temporary",
    "ACTIVATION": "activation",
    "GRADIENT": "gradient",
    "AUTOGRAD_DETAIL": "autograd_detail",
    "PARAMETER": "parameter",
    "OPTIMIZER_STATE": "optimizer_state",
}


def training_device(model: Any) -> str:
    """The device the run trains on: the model's first parameter's, else the current CUDA
    device where there is one, else the CPU."""
    import torch

    if model is not None:
        for p in model.parameters():
            device = p.device
            if device.type == "cuda" and device.index is None:
                return f"cuda:{torch.cuda.current_device()}"
            return f"{device.type}:{device.index}" if device.index is not None else device.type
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def _storage_bytes(tensors: Iterable[Any], device: str, seen: set[int]) -> int:
    """Bytes of the distinct storages of ``tensors`` on ``device`` not already in ``seen``
    (tied weights and views share a storage: counted once)."""
    import torch

    want = torch.device(device)
    total = 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type != want.type:
            continue
        if want.index is not None and t.device.index != want.index:
            continue
        try:
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
        except Exception:  # a tensor without storage (meta, sparse, a subclass): not memory here
            continue
        if ptr and ptr not in seen:
            seen.add(ptr)
            total += size
    return total


def exact_state(model: Any, optimizers: Iterable[Any], device: str) -> dict[str, int]:
    """Bytes of the model's parameters, their gradients and the optimizers' state on ``device``,
    measured now (the window's end: after an optimizer step, before the next zero_grad)."""
    params: list[Any] = []
    if model is not None:
        params.extend(model.parameters())
    states: list[Any] = []
    for opt in optimizers:
        for group in opt.param_groups:
            params.extend(group["params"])
        for state in opt.state.values():
            states.extend(state.values())
    seen: set[int] = set()
    parameter = _storage_bytes(params, device, seen)
    gradient = _storage_bytes((p.grad for p in params if p.grad is not None), device, seen)
    optimizer_state = _storage_bytes(states, device, seen)
    return {"parameter": parameter, "gradient": gradient, "optimizer_state": optimizer_state}


def categorise(prof: Any, device: str, exact: dict[str, int] | None) -> MemoryCategories:
    """The categories of the window's memory on ``device`` from a stopped profiler ``prof``.

    ``MemoryProfile`` is built from the results directly: ``prof._memory_profile()`` insists on
    ``with_stack``, which only feeds the Python tracer (better parameter and optimizer-state
    guesses) and which the exact correction replaces.
    """
    import torch
    from torch.profiler._memory_profiler import MemoryProfile, MemoryProfileTimeline

    results = prof.profiler.kineto_results
    memory_profile = MemoryProfile(results)
    timeline = MemoryProfileTimeline(memory_profile)
    want = torch.device(device)
    events = [e for e in timeline.timeline if e[2][0].device == want]
    times, sizes = _coalesce(events, timeline.categories)
    if not times:
        return MemoryCategories(device=device)
    totals = [sum(row.values()) for row in sizes]
    peak = max(range(len(totals)), key=totals.__getitem__)
    torch_at_peak = {name: int(sizes[peak].get(name, 0)) for name in MEMORY_CATEGORIES}
    at_peak, moved = correct(torch_at_peak, exact) if exact else (dict(torch_at_peak), 0)
    live = _live_at_peak(memory_profile, events, times[peak])
    for category, nbytes in optimizer_intermediates(live).items():
        shift = min(nbytes, at_peak[category])
        at_peak[category] -= shift
        at_peak["unknown"] += shift
        moved += shift
    t0 = times[0]
    keep = _downsample(totals, peak, MAX_POINTS)
    # Every point is corrected as the peak is (the model's state), so the chart and the table
    # agree; the peak's own point is the table's.
    points = [correct(sizes[i], exact)[0] if exact else sizes[i] for i in keep]
    points[keep.index(peak)] = at_peak
    return MemoryCategories(
        device=device,
        peak_bytes=int(totals[peak]),
        peak_t_ms=(times[peak] - t0) / 1e3,
        at_peak=at_peak,
        torch_at_peak=torch_at_peak,
        moved_to_unknown_bytes=moved,
        exact=dict(exact or {}),
        t_ms=[round((times[i] - t0) / 1e3, 3) for i in keep],
        timeline={n: [int(p.get(n, 0)) for p in points] for n in MEMORY_CATEGORIES},
        top_at_peak=_top_ops(live),
    )


def _category_name(category: Any) -> str:
    if category is None:
        return "unknown"
    return _TORCH_NAMES.get(getattr(category, "name", ""), "unknown")


def _coalesce(events: list[Any], categories: Any) -> tuple[list[int], list[dict[str, int]]]:
    """Bytes by category after each distinct time (µs) of the timeline, as torch's own
    ``_coalesce_timeline`` computes them (pre-existing memory counted from the first time)."""
    from torch.profiler._memory_profiler import Action, TensorKey

    def name(key: Any, version: int) -> str:
        if not isinstance(key, TensorKey):
            return "unknown"
        return _category_name(categories.get(key, version))

    times: list[int] = []
    sizes: list[dict[str, int]] = []
    current = dict.fromkeys(MEMORY_CATEGORIES, 0)
    t_min = min((e[0] for e in events if e[0] >= 0), default=0)
    for t_ns, action, (key, version), nbytes in events:
        t = t_min // 1000 if t_ns < 0 else t_ns // 1000
        if times and t != times[-1]:
            sizes.append(dict(current))
            times.append(t)
        elif not times:
            times.append(t)
        if action in (Action.PREEXISTING, Action.CREATE):
            current[name(key, version)] += int(nbytes)
        elif action == Action.INCREMENT_VERSION:
            current[name(key, version)] -= int(nbytes)
            current[name(key, version + 1)] += int(nbytes)
        elif action == Action.DESTROY:
            current[name(key, version)] -= int(nbytes)
    if times:
        sizes.append(dict(current))
    return times, sizes


def correct(torch_at_peak: dict[str, int], exact: dict[str, int]) -> tuple[dict[str, int], int]:
    """The categories at the peak with the model's state set from exact figures; returns them
    and the bytes moved to "unknown".

    What rests on what: the pool torch filed as model state or could not place (parameter,
    gradient, optimizer_state, unknown) is redistributed. Parameters live for the whole window,
    so ``parameter`` is their exact bytes. Optimizer state, once created, lives as long, so
    ``optimizer_state`` is its exact bytes measured at the window's end (it may not exist yet at
    a peak before the first optimizer step: then torch filed none and the pool bounds it).
    Gradients come and go within a step (``zero_grad`` frees them), so ``gradient`` keeps torch's
    own figure (it sees gradients directly, from ``AccumulateGrad``), capped at the exact bytes of
    the ``.grad`` tensors. The rest of the pool is what torch over-filed (the optimizer's own
    intermediates, chiefly): "unknown". Categories other than the pool are torch's; the sum is
    unchanged.
    """
    pool_names = ("parameter", "gradient", "optimizer_state", "unknown")
    pool = sum(torch_at_peak.get(n, 0) for n in pool_names)
    out = dict(torch_at_peak)
    parameter = min(exact.get("parameter", 0), pool)
    state = min(exact.get("optimizer_state", 0), pool - parameter)
    grad_exact = exact.get("gradient", 0)
    gradient = min(torch_at_peak.get("gradient", 0), grad_exact, pool - parameter - state)
    unknown = pool - parameter - state - gradient
    out.update(parameter=parameter, optimizer_state=state, gradient=gradient, unknown=unknown)
    moved = max(0, unknown - torch_at_peak.get("unknown", 0))
    return out, moved


def _downsample(totals: list[int], peak: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` points: the highest of each of ``limit`` equal buckets (a
    spike is not averaged away), the peak among them."""
    n = len(totals)
    if n <= limit:
        return list(range(n))
    keep = set()
    for b in range(limit):
        lo, hi = b * n // limit, (b + 1) * n // limit
        if hi > lo:
            keep.add(max(range(lo, hi), key=totals.__getitem__))
    keep.add(peak)
    return sorted(keep)


def _op_name(event: Any) -> tuple[str, bool]:
    """The operator an allocation belongs to: its outermost ``aten::`` ancestor (``aten::linear``
    rather than the ``aten::empty`` inside it), else its direct parent; and whether it was made
    inside an optimizer step (``Optimizer.step#...``)."""
    name = None
    in_optimizer = False
    node = getattr(event, "parent", None)
    first = node.name if node is not None else None
    while node is not None:
        text = str(node.name)
        if text.startswith("aten::"):
            name = text
        elif text.startswith("Optimizer.step#"):
            in_optimizer = True
        node = node.parent
    return str(name or first or "unknown"), in_optimizer


def _live_at_peak(
    memory_profile: Any, events: list[Any], peak_us: int
) -> list[tuple[int, str, str, bool]]:
    """The allocations live at the peak: (bytes, category, operator, made in an optimizer
    step) each; memory allocated before the window has no operator."""
    from torch._C._profiler import _EventType
    from torch.profiler._memory_profiler import Action, TensorKey

    allocated_by: dict[Any, tuple[str, bool]] = {}
    for event in memory_profile._op_tree.dfs():
        if event.typed[0] == _EventType.Allocation and event.typed[1].alloc_size > 0:
            key = TensorKey.from_allocation(event.typed[1])
            if key is not None:
                allocated_by[key] = _op_name(event)
    live: dict[Any, list[int]] = {}  # key: [bytes, version]
    for t_ns, action, (key, version), nbytes in events:
        if t_ns >= 0 and t_ns // 1000 > peak_us:
            break
        entry = live.setdefault(key, [0, version])
        if action in (Action.PREEXISTING, Action.CREATE):
            entry[0] += int(nbytes)
        elif action == Action.INCREMENT_VERSION:
            entry[1] = version + 1
        elif action == Action.DESTROY:
            entry[0] -= int(nbytes)
    categories = memory_profile._categories
    out = []
    for key, (nbytes, version) in live.items():
        if nbytes <= 0:
            continue
        category = categories.get(key, version) if isinstance(key, TensorKey) else None
        op, in_optimizer = allocated_by.get(key, ("allocated before the window", False))
        out.append((nbytes, _category_name(category), op, in_optimizer))
    return out


def optimizer_intermediates(live: list[tuple[int, str, str, bool]]) -> dict[str, int]:
    """Bytes live at the peak that an optimizer step allocated, by the category torch filed them
    under, outside the model-state categories (the optimizer's own intermediates: torch files
    them as activations or temporaries, yet they do not grow with the batch)."""
    out: dict[str, int] = {}
    for nbytes, category, _op, in_optimizer in live:
        if in_optimizer and category in ("activation", "input", "temporary", "autograd_detail"):
            out[category] = out.get(category, 0) + nbytes
    return out


def _top_ops(live: list[tuple[int, str, str, bool]]) -> list[MemoryOp]:
    """The operators whose allocations hold the most memory at the peak (at most TOP_OPS)."""
    by_op: dict[str, int] = {}
    for nbytes, _category, op, _in_optimizer in live:
        by_op[op] = by_op.get(op, 0) + nbytes
    top = sorted(by_op.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_OPS]
    return [MemoryOp(name=name, bytes=nbytes) for name, nbytes in top]
