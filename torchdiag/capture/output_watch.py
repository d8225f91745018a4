"""The model's first outputs, digested: what ``torchdiag try`` compares on a run without a loss.

An inference run calls no ``backward()``, so there is no loss to tell whether a fix kept the
numerics; the model's outputs tell it instead. Only a bounded digest of the first
:data:`OUTPUT_CALLS` outermost calls is kept (:class:`~torchdiag.record.OutputDigest`): the
shape, an evenly strided sample of :data:`OUTPUT_VALUES` values, and for a 2-D output the
argmax of its first :data:`OUTPUT_ROWS` rows. The samples are sliced on the output's device and
read only when the run ends, so watching adds no synchronisation to the calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torchdiag.record import OutputDigest

OUTPUT_CALLS = 8
OUTPUT_VALUES = 256
OUTPUT_ROWS = 256


class OutputWatch:
    """Keeps digests of the first :data:`OUTPUT_CALLS` outputs handed to :meth:`keep`."""

    def __init__(self, calls: int = OUTPUT_CALLS) -> None:
        self._limit = calls
        self._seen = 0
        # Per call: (call index, shape, dtype, sampled values, argmax or None), on the device.
        self._kept: list[tuple[int, list[int], str, Any, Any]] = []

    def keep(self, output: Any) -> None:
        """Digest one outermost call's output (the first tensor in it); calls past the limit,
        and outputs holding no tensor, are counted and skipped."""
        call = self._seen
        self._seen += 1
        if call >= self._limit:
            return
        tensor = first_tensor(output)
        if tensor is None:
            return
        import torch

        with torch.no_grad():  # slicing must not record a graph on a grad-mode output
            flat = tensor.detach().reshape(-1)
            stride = max(1, math.ceil(flat.numel() / OUTPUT_VALUES))
            # clone: the script may overwrite the output in place after the call.
            values = flat[::stride][:OUTPUT_VALUES].float().clone()
            argmax = None
            if tensor.dim() == 2 and tensor.shape[1] > 0 and tensor.is_floating_point():
                argmax = tensor.detach()[:OUTPUT_ROWS].argmax(dim=1)
        dtype = str(tensor.dtype).removeprefix("torch.")
        self._kept.append((call, list(tensor.shape), dtype, values, argmax))

    def digests(self) -> list[OutputDigest]:
        """The digests, read from the device once per output (at the end of the run)."""
        out = []
        for call, shape, dtype, values, argmax in self._kept:
            numbers = [v if math.isfinite(v) else None for v in values.cpu().tolist()]
            top = [int(i) for i in argmax.cpu().tolist()] if argmax is not None else None
            digest = OutputDigest(call=call, shape=shape, dtype=dtype, values=numbers, argmax=top)
            out.append(digest)
        return out


def first_tensor(output: Any) -> Any:
    """The first tensor in an output: itself, else the first one found depth first in its
    tuples, lists and mappings (a model returning ``(logits, aux)`` is judged on its logits)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        items: Any = output.values()
    elif isinstance(output, (tuple, list)):
        items = output
    else:
        return None
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None
