"""``model.generate()`` (transformers): one step per call, the tokens it generated, tokens per
second in the headline and every output, and the patch taken off when the block ends."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded; make sure nothing tries
transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from transformers.generation.utils import GenerationMixin  # noqa: E402

import torchdiag  # noqa: E402
from torchdiag.analyze.registry import analyze  # noqa: E402
from torchdiag.capture.generate_watch import GenerateWatch, generated_tokens  # noqa: E402
from torchdiag.capture.import_hook import PatchOnImport  # noqa: E402
from torchdiag.capture.steps import StepTimer  # noqa: E402
from torchdiag.diff import diff_runs  # noqa: E402
from torchdiag.record import RunRecord, load_record  # noqa: E402
from torchdiag.report.diff_render import render_diff_text  # noqa: E402
from torchdiag.report.markdown import render_markdown  # noqa: E402
from torchdiag.report.text import render_text  # noqa: E402
from torchdiag.report.verdict import headline_items  # noqa: E402
from torchdiag.view.run_view import RunView  # noqa: E402

BATCH, PROMPT, NEW = 2, 5, 6


class PlantedError(Exception):
    pass


def _gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=32, vocab_size=100, n_positions=64, bos_token_id=1,
        eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def _t5() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
        num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return transformers.T5ForConditionalGeneration(config).eval()


def _prompt() -> torch.Tensor:
    return torch.randint(3, 100, (BATCH, PROMPT))  # no pad, bos or eos token in the prompt


def _generate(model: torch.nn.Module, ids: torch.Tensor, **kwargs) -> torch.Tensor:
    return model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **kwargs)


def _profile(tmp_path, **kwargs):
    return torchdiag.profile(output=tmp_path / "run.json", profile_steps=0, **kwargs)


def _steady_tokens_per_s(record: RunRecord) -> float:
    """Tokens over wall time of the steps the headline calls steady: not the warm-up call, not
    a profiled call (this record's own rows, one step each)."""
    s = record.steps
    keep = [i for i in range(len(s.steps)) if s.first_step[i] > 0 and not s.profiled[i]]
    return sum(s.tokens[i] for i in keep) / (sum(s.wall_ms[i] for i in keep) / 1e3)


# -- live capture ---------------------------------------------------------------------------------


def test_each_generate_call_is_one_step_with_its_tokens(tmp_path):
    model = _gpt2()
    original = GenerationMixin.generate
    with _profile(tmp_path) as run:
        for _ in range(4):
            out = _generate(model, _prompt())
            assert out.shape == (BATCH, PROMPT + NEW)
    assert GenerationMixin.generate is original  # the class is left as it was
    record = load_record(tmp_path / "run.json")
    assert (record.steps.detection, record.steps.count) == ("forward", 4)
    assert record.mode == "inference"
    assert record.steps.tokens == [BATCH * NEW] * 4
    calls = record.environment.model_calls
    assert (calls.model, calls.generate) == ("GPT2LMHeadModel", 4)
    # The forwards inside are still the model's calls (one per token), just not steps.
    assert (calls.no_grad, calls.grad) == (4 * NEW, 0)
    numbers = RunView(record).headline
    assert numbers["step_is_forward_call"] and numbers["step_is_generate_call"]
    assert numbers["tokens_per_s"] == pytest.approx(_steady_tokens_per_s(record), abs=1e-3)
    assert run.record is not None and run.record.steps.tokens == record.steps.tokens


def test_an_encoder_decoder_counts_only_the_decoder_tokens_it_generated(tmp_path):
    model = _t5()
    with _profile(tmp_path) as run:
        for _ in range(3):
            out = _generate(model, _prompt(), return_dict_in_generate=True)
            assert out.sequences.shape == (BATCH, 1 + NEW)  # the start token is not generated
    record = run.record
    assert record.steps.count == 3 and record.steps.tokens == [BATCH * NEW] * 3
    # Found on entering generate(): the whole model, not the encoder generate() calls first.
    assert record.environment.model_calls.model == "T5ForConditionalGeneration"
    assert RunView(record).headline["tokens_per_s"] == pytest.approx(
        _steady_tokens_per_s(record), abs=1e-3
    )


def test_a_forward_loop_still_has_a_step_per_call_and_no_tokens(tmp_path):
    model = _gpt2()
    with _profile(tmp_path) as run, torch.no_grad():
        for _ in range(5):
            model(_prompt())
    record = run.record
    assert (record.steps.detection, record.steps.count) == ("forward", 5)
    assert record.steps.tokens == [] and record.environment.model_calls.generate == 0
    numbers = RunView(record).headline
    assert numbers["tokens_per_s"] is None and not numbers["step_is_generate_call"]
    assert all(label != "Tokens/s" for label, _ in headline_items(numbers))


def test_a_generate_call_that_raises_passes_the_exception_through(tmp_path):
    model = _gpt2()
    planted = PlantedError("from the user's logits processor")

    def fail(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        raise planted

    original = GenerationMixin.generate
    with pytest.raises(PlantedError) as caught, _profile(tmp_path):
        _generate(model, _prompt())
        _generate(model, _prompt(), logits_processor=[fail])
    assert caught.value is planted
    assert GenerationMixin.generate is original
    record = load_record(tmp_path / "run.json")
    assert record.status.state == "failed" and record.status.exception_type == "PlantedError"
    assert record.steps.count == 1 and record.steps.tokens == [BATCH * NEW]
    assert record.environment.model_calls.generate == 1


def test_a_patch_that_fails_leaves_generate_as_it_was(tmp_path, monkeypatch):
    def broken(self, original):
        raise RuntimeError("planted")

    monkeypatch.setattr(GenerateWatch, "_wrap", broken)
    model = _gpt2()
    original = GenerationMixin.generate
    with _profile(tmp_path) as run:
        assert GenerationMixin.generate is original
        out = _generate(model, _prompt())
    assert out.shape == (BATCH, PROMPT + NEW)
    status = run.record.collectors["model"]
    assert not status.available and "generate() not watched" in (status.reason or "")
    assert run.record.environment.model_calls.generate == 0


def test_max_steps_stops_a_generate_loop(tmp_path):
    model = _gpt2()
    calls = 0
    with _profile(tmp_path, max_steps=2) as run:
        for _ in range(5):
            _generate(model, _prompt())
            calls += 1
    assert calls == 2 and run.record.steps.count == 2
    assert run.record.status.state == "completed"


def test_torchdiag_run_watches_generate_when_the_script_imports_transformers(tmp_path):
    """Under ``torchdiag run`` transformers is imported inside the capture: patched on import."""
    script = tmp_path / "generate.py"
    script.write_text(
        "import torch, transformers\n"
        "config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=100,\n"
        "    n_positions=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)\n"
        "model = transformers.GPT2LMHeadModel(config).eval()\n"
        "for _ in range(3):\n"
        "    model.generate(torch.randint(3, 100, (2, 5)), max_new_tokens=4,\n"
        "                   min_new_tokens=4, do_sample=False)\n"
    )
    out = tmp_path / "out" / "run.json"
    argv = [sys.executable, "-m", "torchdiag", "run", "--output", str(out), "--profile-steps", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [*argv, "--no-report", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    record = load_record(out)
    assert record.steps.count == 3 and record.steps.tokens == [2 * 4] * 3
    assert record.environment.model_calls.generate == 3


# -- counting tokens -------------------------------------------------------------------------------


def test_tokens_are_rows_times_new_positions():
    decoder = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=False))
    encoder_decoder = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=True))
    prompt = torch.zeros(2, 5, dtype=torch.long)
    out = torch.zeros(6, 9, dtype=torch.long)  # num_return_sequences=3: the output's rows count
    assert generated_tokens(decoder, (prompt,), {}, out) == 6 * 4
    assert generated_tokens(decoder, (), {"input_ids": prompt}, out) == 6 * 4
    assert generated_tokens(decoder, (), {"inputs": prompt}, SimpleNamespace(sequences=out)) == 24
    # From embeddings alone a decoder-only model returns only the new tokens.
    embeds = torch.zeros(2, 5, 32)
    assert generated_tokens(decoder, (), {"inputs_embeds": embeds}, out) == 6 * 9
    assert generated_tokens(encoder_decoder, (prompt,), {}, out) == 6 * 8
    start = torch.zeros(2, 3, dtype=torch.long)
    assert generated_tokens(encoder_decoder, (), {"decoder_input_ids": start}, out) == 6 * 6
    # What the shapes cannot tell is unknown, not guessed.
    assert generated_tokens(decoder, (), {}, out) is None
    assert generated_tokens(decoder, (prompt,), {}, torch.zeros(9)) is None
    assert generated_tokens(decoder, (torch.zeros(2, 12),), {}, out) is None


def test_merged_step_rows_hold_their_steps_total_of_tokens():
    timer = StepTimer(max_rows=4)
    for n in (1, 2, 3, 4, 5, None):
        timer.add_tokens(n)
        timer.boundary("forward")
    s = timer.series()
    # A step without a count (no generate() call in it) adds none to its merged row.
    assert s.steps == [2, 2, 2] and s.tokens == [3, 7, 5]
    assert s.count == 6
    timer.boundary("forward")
    timer.boundary("forward")
    assert timer.series().tokens[-1] is None  # a row of steps without a count has none


def test_tokens_of_forgotten_steps_fold_into_the_open_step():
    timer = StepTimer()
    timer.add_tokens(8)
    timer.boundary("forward")
    timer.add_tokens(8)
    timer.restart_detection()  # an optimizer step: the run trains after all
    timer.boundary("optimizer")
    assert timer.series().tokens == [16]


def test_the_import_hook_patches_a_module_when_it_is_imported(tmp_path, monkeypatch):
    (tmp_path / "torchdiag_hooked_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    hook = PatchOnImport(["torchdiag_hooked_module"], seen.append)
    hook.install()
    try:
        import torchdiag_hooked_module  # type: ignore[import-not-found]
    finally:
        hook.uninstall()
        sys.modules.pop("torchdiag_hooked_module", None)
    assert seen == [torchdiag_hooked_module] and hook not in sys.meta_path


# -- outputs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generate_record(tmp_path_factory) -> RunRecord:
    path = tmp_path_factory.mktemp("generate") / "run.json"
    model = _gpt2()
    with torchdiag.profile(output=path, profile_steps=0):
        for _ in range(4):
            _generate(model, _prompt())
    return load_record(path)


def test_every_output_shows_the_headline_tokens_per_second(generate_record):
    view = RunView(generate_record)
    value = view.headline["tokens_per_s"]
    assert value is not None and value > 0
    items = dict(headline_items(view.headline))
    assert items["Tokens/s"].endswith("tokens/s (generated)")
    assert "Steps (generate calls)" in items and "Median generate call" in items
    analysis = analyze(view)
    assert "Tokens/s" in render_markdown(view, analysis)
    assert "Tokens/s" in render_text(view, analysis, width=200)


def test_diff_compares_tokens_per_second(generate_record):
    view = RunView(generate_record)
    diff = diff_runs(view, view)
    assert diff.base.tokens_per_s == pytest.approx(view.headline["tokens_per_s"])
    assert diff.tokens_change_pct == 0
    assert "Tokens/s (generated)" in render_diff_text(diff)


def test_a_training_run_shows_no_tokens_per_second(generate_record):
    import msgspec

    training = msgspec.structs.replace(generate_record, mode="training")
    assert RunView(training).headline["tokens_per_s"] is None
