"""The self-contained HTML report.

The page is rendered with jinja2 (autoescape on) from ``torchdiag.report_templates``; the values
it shows come ready-formatted from :mod:`torchdiag.report.page_context`. Chart data enters the page
once, as a JSON island (``<script type="application/json" id="torchdiag-data">``) that
``report.js`` parses and hands to ``Plotly.newPlot``; the figures themselves are plain
plotly-JSON dicts from :mod:`torchdiag.report.figures`.

By default plotly.js travels inside the page, packed (:mod:`torchdiag.report.bundle`: 1.8 MB
instead of 4.8 MB), so the page makes no network request and works offline; ``cdn=True`` links
the matching plotly.js from the CDN instead (a ~1.8 MB smaller file).

Rendering is deterministic: the same record gives the same bytes (sorted keys, no render time,
no random ids).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
import re
from typing import Any

import jinja2

from torchdiag.analyze.registry import Analysis
from torchdiag.report.bundle import packed_plotly, plotly_js
from torchdiag.report.page_context import build_context
from torchdiag.report.renderer import Renderer, RenderOptions
from torchdiag.report.template_cache import UserCacheBytecodeCache
from torchdiag.view.numbers import to_jsonable
from torchdiag.view.run_view import RunView

TEMPLATES_PACKAGE = "torchdiag.report_templates"
DATA_ELEMENT_ID = "torchdiag-data"
PLOTLY_ELEMENT_ID = "torchdiag-plotly"

# Characters that must not appear raw in an inline <script>: "</" ends it, "<!--" switches the
# HTML tokenizer into an escaped state, U+2028/U+2029 end lines in older JavaScript parsers.
_JSON_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_SCRIPT_RE = re.compile("[<>&\u2028\u2029]")


class HtmlRenderer(Renderer):
    """The self-contained interactive page of one run."""

    def render(self, view: RunView, analysis: Analysis, options: RenderOptions) -> str:
        return render_html(view, analysis, cdn=options.cdn)


RENDERER = HtmlRenderer()


def render_html(view: RunView, analysis: Analysis, *, cdn: bool = False) -> str:
    """Render ``view`` and its analysis as one HTML page.

    With ``cdn=False`` (the default) plotly.js travels packed inside the page, which needs no
    network; with ``cdn=True`` it loads plotly.js from ``cdn.plot.ly``.
    """
    bundle = None if cdn else packed_plotly()
    version = plotly_js(code=False)[0] if bundle is None else bundle.version
    context, data = build_context(view, analysis)
    context["data_json"] = json_for_script(data)
    context["data_id"] = DATA_ELEMENT_ID
    context["plotly_id"] = PLOTLY_ELEMENT_ID
    context["plotly_src"] = f"https://cdn.plot.ly/plotly-{version}.min.js" if cdn else None
    context["plotly_packed"] = bundle.packed if bundle is not None else None
    context["css"] = _asset("report.css")
    context["report_js"] = _asset("report.js")
    # Only these exact scripts may run: a hash policy (unlike 'unsafe-inline') also blocks
    # inline event handlers, so markup that slipped past escaping still could not execute.
    # plotly.js is listed by the hash of its unpacked code, which report.js runs.
    hashes = [_script_hash(context["report_js"])]
    if bundle is not None:
        hashes.append(_csp_source(bundle.sha256))
    context["script_hashes"] = " ".join(hashes)
    return _environment().get_template("report.html").render(context)


def json_for_script(data: Any) -> str:
    """JSON text that is safe verbatim inside ``<script type="application/json">``.

    ``<``, ``>``, ``&``, U+2028 and U+2029 can only occur inside JSON strings, where the ``\\uXXXX``
    spelling means the same character, so ``JSON.parse`` returns the original strings.
    """
    text = json.dumps(
        to_jsonable(data),
        sort_keys=True,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    )
    return _JSON_SCRIPT_RE.sub(lambda m: _JSON_SCRIPT_ESCAPES[m.group()], text)


# ---------------------------------------------------------------------------------------------
# Assets


# How the templates are compiled; part of the compiled templates' cache key.
_TEMPLATE_OPTIONS: dict[str, Any] = {
    "autoescape": True,
    "undefined": jinja2.StrictUndefined,
    "trim_blocks": True,
    "lstrip_blocks": True,
    "keep_trailing_newline": True,
}


@functools.cache
def _environment() -> jinja2.Environment:
    # Compiling the templates is ~50 ms of every report; the compiled code is kept between
    # processes (see torchdiag.report.template_cache).
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(importlib.resources.files(TEMPLATES_PACKAGE))),
        bytecode_cache=UserCacheBytecodeCache(_TEMPLATE_OPTIONS),
        **_TEMPLATE_OPTIONS,
    )


@functools.cache
def _asset(name: str) -> str:
    return (importlib.resources.files(TEMPLATES_PACKAGE) / name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=8)
def _script_hash(code: str) -> str:
    """The CSP source expression allowing exactly this inline script."""
    return _csp_source(hashlib.sha256(code.encode("utf-8")).digest())


def _csp_source(sha256: bytes) -> str:
    """The CSP source expression allowing the script whose UTF-8 has this SHA-256."""
    return f"'sha256-{base64.b64encode(sha256).decode('ascii')}'"
