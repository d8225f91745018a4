"""The user cache and what is kept in it: plotly.js packed once, report templates compiled once.

Every test points the cache at its own folder and clears the per-process memo, so each render
below really goes to the cache (or packs and compiles) as a fresh process would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from torchdiag.analyze.registry import Analysis
from torchdiag.record import RunRecord
from torchdiag.report import bundle, html
from torchdiag.user_cache import CACHE_DIR_ENV, cache_dir, read_entry, write_entry
from torchdiag.view.run_view import RunView


@pytest.fixture(autouse=True)
def fresh_process_memo() -> Iterator[None]:
    """Forget the packed bundle and the template environment before and after each test."""
    bundle.packed_plotly.cache_clear()
    html._environment.cache_clear()
    yield
    bundle.packed_plotly.cache_clear()
    html._environment.cache_clear()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder of this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(folder))
    return folder


def render() -> str:
    """A page with plotly.js inlined, as a new process would render it."""
    bundle.packed_plotly.cache_clear()
    html._environment.cache_clear()
    return html.render_html(RunView(RunRecord(name="cache")), Analysis(findings=[], skipped=[]))


def plotly_entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("plotly-*.b85"))


@pytest.fixture(scope="module")
def uncached_page() -> str:
    """The page rendered with no cache at all: what every other render must equal."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_DIR_ENV, "")
        return render()


def test_hit_and_miss_give_the_same_page(cache: Path, uncached_page: str) -> None:
    miss = render()
    (entry,) = plotly_entries(cache)
    assert len(list(cache.glob("jinja-*.bc"))) == 2  # report.html and the base it extends
    stamp = entry.stat().st_mtime_ns
    hit = render()
    assert entry.stat().st_mtime_ns == stamp  # served, not written again
    assert miss == hit == uncached_page


def test_hit_is_served_without_packing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    render()

    def no_packing(data: bytes) -> str:
        raise AssertionError("packed although the cache holds the bundle")

    monkeypatch.setattr(bundle, "_pack_utf8", no_packing)
    render()


def test_entry_is_named_by_version_and_code_hash(cache: Path) -> None:
    render()
    (entry,) = plotly_entries(cache)
    version, code = bundle.plotly_js(code=True)
    assert code is not None
    packed = bundle.packed_plotly()
    assert entry.name.startswith(f"plotly-{version}-{packed.sha256.hex()}-")
    assert read_entry(entry.name) == bundle.pack(code).encode("ascii")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:-100] + b"0" * 100, id="payload-changed"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"not an entry\n" + b, id="foreign"),
    ],
)
def test_damaged_entry_is_packed_again(
    cache: Path, uncached_page: str, damage: Callable[[bytes], bytes]
) -> None:
    render()
    (entry,) = plotly_entries(cache)
    good = entry.read_bytes()
    entry.write_bytes(damage(good))
    assert render() == uncached_page
    assert entry.read_bytes() == good  # re-packed and stored again


def test_entry_under_another_name_is_not_served(cache: Path) -> None:
    assert write_entry("a-name", b"payload")
    (cache / "a-name").rename(cache / "b-name")
    assert read_entry("b-name") is None
    assert read_entry("a-name") is None


def test_damaged_compiled_template_is_compiled_again(cache: Path, uncached_page: str) -> None:
    render()
    for entry in cache.glob("jinja-*.bc"):
        entry.write_bytes(entry.read_bytes()[:-50] + b"\0" * 50)
    assert render() == uncached_page


def test_unwritable_cache_still_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uncached_page: str
) -> None:
    # A file where the folder should be: mkdir fails even for root, which ignores permissions.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker / "cache"))
    assert render() == uncached_page
    assert not write_entry("x", b"y")
    assert read_entry("x") is None


def test_empty_variable_turns_the_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, "")
    assert cache_dir() is None
    assert not write_entry("x", b"y")
    assert read_entry("x") is None


def test_xdg_cache_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "torchdiag"
    # The XDG spec: a relative value is invalid and ignored.
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "torchdiag"


def test_old_plotly_entries_are_pruned(cache: Path) -> None:
    for n in range(bundle._KEEP_CACHED + 2):
        assert write_entry(f"plotly-0.0.{n}-x.b85", b"old")
    render()
    entries = plotly_entries(cache)
    assert len(entries) == bundle._KEEP_CACHED
    current = f"plotly-{bundle.packed_plotly().version}-"
    assert any(entry.name.startswith(current) for entry in entries)


def test_bad_entry_names_are_refused() -> None:
    for name in ("", "a/b", "..", ".hidden", "a\nb"):
        with pytest.raises(ValueError):
            read_entry(name)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_bundle_read_as_bytes_is_the_code_read_as_text(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline: str
) -> None:
    # The bundle is read as bytes; with carriage returns (which reading as text translates) it
    # falls back to the text, so the packed code and its hash are always those of the text.
    source = tmp_path / "plotly.min.js"
    source.write_bytes(f"/** plotly.js v9.8.7 */{newline}var x = 'é';{newline}".encode())
    monkeypatch.setattr(bundle, "_plotly_file", lambda: source)
    bundle.plotly_js.cache_clear()
    try:
        text = source.read_text(encoding="utf-8")
        packed = bundle.packed_plotly()
        assert packed.version == "9.8.7"
        assert bundle.unpack(packed.packed) == text
        assert packed.sha256 == hashlib.sha256(text.encode()).digest()
    finally:
        bundle.plotly_js.cache_clear()


def test_bundle_that_is_not_utf8_is_refused(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "plotly.min.js"
    source.write_bytes(b"/** plotly.js v9.8.7 */\nvar x = '\xff';\n")
    monkeypatch.setattr(bundle, "_plotly_file", lambda: source)
    with pytest.raises(UnicodeDecodeError):
        bundle.packed_plotly()
    assert not plotly_entries(cache)
