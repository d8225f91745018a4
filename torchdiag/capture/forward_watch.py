"""The model's calls: where a run without an optimizer has its steps, and whether autograd is used.

The *model* is the outermost module with parameters: the first module with parameters called
while no other module's call is under way (``model(x)``, not its layers, not a parameterless loss
function), found as the model fixes find it (:mod:`torchdiag.capture.model_finder`).
``nn.Module.__call__`` is watched only until that call, then restored; from there on only that
instance pays: its ``forward`` is wrapped to count each outermost call by autograd mode (grad,
``no_grad``, ``inference_mode``) and to tell the session where each call begins and ends.
A transformers ``model.generate()`` call is one outermost call, its forwards (one per token)
counted by mode but cutting no steps (:mod:`torchdiag.capture.generate_watch`).

``torch.autograd.backward`` (which ``Tensor.backward`` calls) and ``torch.autograd.grad`` are
counted too: a run whose graphs no backward ever reads recorded them for nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from torchdiag.capture.generate_watch import GenerateWatch
from torchdiag.capture.model_finder import watch_for_model
from torchdiag.capture.patching import Patches
from torchdiag.record import ModelCalls


def _first_tensor(output: Any) -> Any:
    """The first tensor of a call's output (a tensor, or one in a tuple, list or dict such as a
    transformers ``ModelOutput``), or None."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = tuple(output.values())
    if isinstance(output, (tuple, list)):
        return next((item for item in output if isinstance(item, torch.Tensor)), None)
    return None


def _made_under_inference_mode(output: Any) -> bool:
    """Whether the call's output is an inference tensor: the forward ran in inference mode."""
    import torch

    tensor = _first_tensor(output)
    return tensor is not None and torch.is_inference(tensor)


class ForwardWatch:
    """Finds the model on its first call and reports each of its outermost calls.

    ``on_start`` runs before each outermost call of the model, ``on_end`` after it returns
    (neither runs for a call that raised before or during the forward). An exception they raise
    propagates to the caller: that is how ``max_steps`` ends a run inside ``model(x)``.
    ``on_output``, when given, is handed each forward's output (a failure there is swallowed:
    digesting outputs must never break the run). ``on_tokens``, when given, is handed the tokens
    each ``generate()`` call produced (``None`` where unknown) before its ``on_end``.
    """

    def __init__(
        self,
        on_start: Callable[[], None],
        on_end: Callable[[], None],
        *,
        on_output: Callable[[Any], None] | None = None,
        on_tokens: Callable[[int | None], None] | None = None,
    ) -> None:
        self._on_start = on_start
        self._on_end = on_end
        self._on_output = on_output
        self._on_tokens = on_tokens
        self._searching = Patches()  # nn.Module.__call__, until the model is found
        self._autograd = Patches()  # torch.autograd.backward / grad, for the whole block
        # .call: the thread's outermost call under way ("forward", "generate" or None).
        self._inside = threading.local()
        self._generate = GenerateWatch(self._owns, self._inside, on_start, self._generated)
        self._model: Any = None
        self._own_forward: tuple[bool, Any] | None = None
        self._wrapper: Any = None
        self.calls = ModelCalls()
        self.error: str | None = None

    @property
    def found(self) -> bool:
        """Whether the model has been called (and is watched)."""
        return self._wrapper is not None

    @property
    def model(self) -> Any:
        """The model once found (None before its first call and after ``uninstall``)."""
        return self._model

    def install(self) -> None:
        """Watch module calls until the model is found, and count backward passes."""
        import torch

        watch_for_model(self._searching, self._adopt)
        calls = self.calls
        backward: Callable[..., Any] = torch.autograd.backward
        grad: Callable[..., Any] = torch.autograd.grad

        def counted_backward(*args: Any, **kwargs: Any) -> Any:
            calls.backward += 1
            return backward(*args, **kwargs)

        def counted_grad(*args: Any, **kwargs: Any) -> Any:
            calls.backward += 1
            return grad(*args, **kwargs)

        self._autograd.replace(torch.autograd, "backward", counted_backward)
        self._autograd.replace(torch.autograd, "grad", counted_grad)
        try:
            self._generate.install()
        except Exception as err:  # the forwards are still watched, one step each
            self.error = f"generate() not watched: {type(err).__name__}: {err}"

    def _owns(self, model: Any) -> bool:
        """Whether a ``generate()`` call is the model's; a ``generate()`` made before any call
        of a model makes its model the model (the first module called inside it may be only
        its encoder)."""
        if self._model is None:
            self._searching.restore()
            self._adopt(model)
        return self.found and model is self._model

    def _generated(self, tokens: int | None) -> None:
        self.calls.generate += 1
        if self._on_tokens is not None:
            self._on_tokens(tokens)
        self._on_end()

    def _adopt(self, model: Any) -> None:
        """Wrap ``model.forward`` (this instance only); a failure leaves the model untouched."""
        self._model = model
        try:
            self._wrap(model)
        except Exception as err:  # watching must never break the user's run
            self.error = f"{type(err).__name__}: {err}"

    def _wrap(self, model: Any) -> None:
        import torch

        calls = self.calls
        calls.model = type(model).__name__
        calls.parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        own = vars(model)
        self._own_forward = ("forward" in own, own.get("forward"))
        original = model.forward
        inside = self._inside
        on_start, on_end, on_output = self._on_start, self._on_end, self._on_output

        def forward(*args: Any, **kwargs: Any) -> Any:
            outer = getattr(inside, "call", None)
            if outer == "forward":  # the model calls itself: one outermost call
                return original(*args, **kwargs)
            if torch.is_inference_mode_enabled():
                mode = "inference_mode"
            elif torch.is_grad_enabled():
                mode = "grad"
            else:
                mode = "no_grad"
            # A forward inside generate() is one token of that call: counted, not a step.
            step = outer is None
            if step:
                on_start()
            inside.call = "forward"
            try:
                result = original(*args, **kwargs)
            finally:
                inside.call = outer
            if mode == "grad" and _made_under_inference_mode(result):
                # inference_mode entered inside the call (by the model, or by the
                # inference-mode fix wrapped beneath this watch): no graph was recorded.
                mode = "inference_mode"
            setattr(calls, mode, getattr(calls, mode) + 1)
            if on_output is not None:
                # A digest is a nicety: the user's call must still return its output.
                with contextlib.suppress(Exception):
                    on_output(result)
            if step:
                on_end()
            return result

        model.forward = forward
        self._wrapper = forward

    def uninstall(self) -> None:
        """Restore ``nn.Module.__call__``, the autograd functions, ``generate()`` and the model's
        ``forward``."""
        self._searching.restore()
        self._autograd.restore()
        self._generate.uninstall()
        if self.error is None:
            self.error = self._generate.error
        model, self._model = self._model, None
        if model is None or self._own_forward is None:
            return
        had_own, own = self._own_forward
        # Only our own wrapper is taken off: a forward set over it since is the user's.
        if vars(model).get("forward") is self._wrapper:
            if had_own:
                model.forward = own
            else:
                del model.forward
