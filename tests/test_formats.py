"""One registry of output formats: every format keeps the renderer contract, and the commands'
``--format`` choices, default file names and messages come from the registry alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from tracedata import h200_trace
from viewing import analyzed

from torchdiag.cli import build_parser
from torchdiag.cli.outputs import beside
from torchdiag.report.formats import FORMATS, format_names, output_format
from torchdiag.report.renderer import Document, Renderer, RenderOptions
from torchdiag.traces.load import record_from_traces

METHODS: dict[Document, str] = {"run": "render", "diff": "render_diff", "try": "render_try"}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_each_format_renders_exactly_the_documents_it_declares(fmt) -> None:
    renderer = fmt.renderer()
    assert isinstance(renderer, Renderer)
    for document, method in METHODS.items():
        overridden = getattr(type(renderer), method) is not getattr(Renderer, method)
        assert overridden == (document in fmt.documents), f"{fmt.name}: {method}"


def test_formats_are_named_once_with_distinct_suffixes() -> None:
    names = [f.name for f in FORMATS]
    assert len(set(names)) == len(names)
    assert len({f.suffix for f in FORMATS}) == len(FORMATS)
    assert all(f.suffix.startswith(".") and "/" in f.media_type for f in FORMATS)


def test_an_unknown_format_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="one of html, md, json, text"):
        output_format("pdf")


def _choices(command: str) -> tuple[str, ...]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[command]  # type: ignore[index]
    action = next(a for a in parser._actions if a.dest == "format")
    return tuple(action.choices)


@pytest.mark.parametrize(
    ("command", "document"), [("report", "run"), ("diff", "diff"), ("try", "try")]
)
def test_the_commands_offer_the_registered_formats(command: str, document: Document) -> None:
    assert _choices(command) == format_names(document)


def test_a_report_goes_beside_its_input_with_the_format_suffix(tmp_path: Path) -> None:
    source = tmp_path / "run.json"
    source.write_text("{}")
    for fmt in FORMATS:
        assert beside(source, fmt) == tmp_path / f"run{fmt.suffix}"


def test_every_run_format_renders_a_record() -> None:
    view, analysis = analyzed(record_from_traces(h200_trace("resnet_fp32")))
    for name in format_names("run"):
        text = output_format(name).renderer().render(view, analysis, RenderOptions(cdn=True))
        assert text.endswith("\n") and "no-amp" in text


def test_the_command_list_drives_help_and_usage_errors(run_cli, capsys) -> None:
    from torchdiag.cli.commands import COMMANDS

    with pytest.raises(SystemExit) as exit_:
        run_cli("--help")
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for command in COMMANDS:
        assert command.name in out and command.help.split()[0] in out
    code, _, err = run_cli()
    assert code == 2 and "a command is required: report, diff, run, try or watch" in err
    code, _, err = run_cli("bogus")
    assert code == 2 and len(err.strip().splitlines()) == 1
