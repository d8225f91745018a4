"""``model.generate()`` (Hugging Face transformers): one call of the model, however many forwards.

``generate()`` calls the model's ``forward`` once per generated token; counted one by one, every
token would be a "step" of an inference loop. While the capture runs,
``GenerationMixin.generate`` is patched at class level: the class, not the model instance,
because ``generate()`` may be the run's very first call, made before the model is known (the
model is then the one generating, found on entering its ``generate()``), and because every
model class inherits it from there (an override that calls ``super().generate()`` is seen too).

transformers is never imported here (importing it takes seconds): the patch goes on when the
user's code imports ``transformers.generation.utils`` (under ``torchdiag run`` the script
imports it inside the capture), or right away where it already has been
(:class:`~torchdiag.capture.import_hook.PatchOnImport`), and comes off when the capture ends.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from torchdiag.capture.import_hook import PatchOnImport
from torchdiag.capture.patching import Patches

GENERATION_MODULE = "transformers.generation.utils"


class GenerateWatch:
    """Makes each outermost ``generate()`` call of the model one outermost call.

    ``owns(model)`` says whether a call's model is the watched one (adopting it when no model
    is known yet); ``inside.call`` is the thread's outermost call under way ("forward",
    "generate", or ``None``), shared with the forward watch so the forwards inside a
    ``generate()`` cut no steps. ``on_start`` runs before the call (its exception propagates:
    ``max_steps``), ``on_end(tokens)`` after it returns, with the tokens it generated (``None``
    where they cannot be told). Neither runs for a call that raised. A patch that fails (it may
    run inside the user's ``import transformers``) leaves ``generate()`` as it was and says why in
    ``error``.
    """

    def __init__(
        self,
        owns: Callable[[Any], bool],
        inside: threading.local,
        on_start: Callable[[], None],
        on_end: Callable[[int | None], None],
    ) -> None:
        self._owns = owns
        self._inside = inside
        self._on_start = on_start
        self._on_end = on_end
        self._patches = Patches()
        self._hook = PatchOnImport([GENERATION_MODULE], self._patch)
        self._lock = threading.Lock()
        self.error: str | None = None

    def install(self) -> None:
        """Patch ``generate()`` now if transformers generation is imported, else on its import."""
        self._hook.install()

    def uninstall(self) -> None:
        """Stop waiting for the import and restore ``GenerationMixin.generate``."""
        self._hook.uninstall()
        with self._lock:
            self._patches.restore()

    def _patch(self, module: ModuleType) -> None:
        mixin = getattr(module, "GenerationMixin", None)
        if mixin is None:
            return
        with self._lock:
            if not self._hook.installed:
                return  # the capture ended while the module was being imported
            try:
                self._patches.replace(mixin, "generate", self._wrap(mixin.generate))
            except Exception as err:  # never break the user's import
                self.error = f"generate() not watched: {type(err).__name__}: {err}"

    def _wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        inside, owns, on_start, on_end = self._inside, self._owns, self._on_start, self._on_end

        @functools.wraps(original)
        def generate(model: Any, *args: Any, **kwargs: Any) -> Any:
            # A generate() inside another call (an assistant model's, a wrapper's forward) or of
            # another model is part of that call, not a call of its own.
            if getattr(inside, "call", None) is not None or not owns(model):
                return original(model, *args, **kwargs)
            on_start()
            inside.call = "generate"
            try:
                result = original(model, *args, **kwargs)
            finally:
                inside.call = None
            tokens = None
            with contextlib.suppress(Exception):  # counting must never fail the user's call
                tokens = generated_tokens(model, args, kwargs, result)
            on_end(tokens)
            return result

        return generate


def generated_tokens(
    model: Any, args: Sequence[Any], kwargs: Mapping[str, Any], output: Any
) -> int | None:
    """Tokens a ``generate()`` call produced: rows × new positions of its output.

    The output is a ``[batch, length]`` tensor or an object with ``.sequences``. A decoder-only
    model's output starts with the prompt (``inputs`` / ``input_ids``; from ``inputs_embeds``
    alone it holds only new tokens); an encoder-decoder's starts with the decoder's start token
    (or the ``decoder_input_ids`` given), which is not generated. Sequences that stopped early
    are padded to the longest and counted at its length. ``None`` where the shapes do not tell.
    """
    sequences = getattr(output, "sequences", output)
    shape = getattr(sequences, "shape", None)
    if shape is None or len(shape) != 2:
        return None
    rows, length = int(shape[0]), int(shape[1])
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        start = kwargs.get("decoder_input_ids")
        prompt = _length(start) if start is not None else 1
    else:
        ids = _first(args[0] if args else None, kwargs.get("inputs"), kwargs.get("input_ids"))
        embeds_only = ids is None and kwargs.get("inputs_embeds") is not None
        prompt = 0 if embeds_only else _length(ids)
    if prompt is None or length < prompt:
        return None
    return rows * (length - prompt)


def _length(ids: Any) -> int | None:
    """The sequence length of a ``[batch, length]`` tensor of token ids, else ``None``."""
    shape = getattr(ids, "shape", None)
    return int(shape[-1]) if shape is not None and len(shape) == 2 else None


def _first(*values: Any) -> Any:
    """The first of ``values`` that is not ``None``."""
    return next((v for v in values if v is not None), None)
