/* torchdiag report: unpacks plotly.js, draws the charts from the JSON data island and wires the
   copy buttons, sortable tables and "show all" buttons. Needs no network. */
(function () {
  "use strict";

  // plotly.js travels packed (see torchdiag/report/bundle.py): raw DEFLATE in base85 text, this
  // alphabet (RFC 1924's with "<", ">" and "&" written as ".", "," and ":": no markup in it).
  var B85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%:()*+-;.=,?@^_`{|}~";

  function decode85(text) {
    var digit = new Int16Array(128).fill(-1);
    for (var d = 0; d < B85.length; d++) {
      digit[B85.charCodeAt(d)] = d;
    }
    var n = text.length;
    var tail = n % 5;
    var out = new Uint8Array(Math.floor(n / 5) * 4 + (tail ? tail - 1 : 0));
    var o = 0;
    for (var i = 0; i < n; i += 5) {
      var acc = 0;
      for (var j = 0; j < 5; j++) {
        // A short last group is padded with the highest digit, as the encoder's inverse.
        var v = i + j < n ? digit[text.charCodeAt(i + j)] : 84;
        if (v < 0) {
          throw new Error("packed plotly.js is corrupt");
        }
        acc = acc * 85 + v;
      }
      var bytes = [acc >>> 24, (acc >>> 16) & 255, (acc >>> 8) & 255, acc & 255];
      for (var k = 0; k < 4 && o < out.length; k++) {
        out[o++] = bytes[k];
      }
    }
    return out;
  }

  // Resolves once plotly.js is defined (at once when the page links it from the CDN), or rejects.
  function loadPlotly() {
    var packed = document.getElementById("torchdiag-plotly");
    if (!packed || typeof Plotly !== "undefined") {
      return Promise.resolve();
    }
    if (typeof DecompressionStream === "undefined") {
      return Promise.reject(new Error("this browser cannot decompress (no DecompressionStream)"));
    }
    var stream = new Blob([decode85(packed.textContent)]).stream()
      .pipeThrough(new DecompressionStream("deflate-raw"));
    return new Response(stream).text().then(function (code) {
      // An inline script runs as it is inserted; the page's policy admits it by its hash.
      var script = document.createElement("script");
      script.textContent = code;
      document.head.appendChild(script);
    });
  }

  function readData() {
    var node = document.getElementById("torchdiag-data");
    try {
      return JSON.parse(node.textContent);
    } catch (err) {
      return { figures: {}, run: {} };
    }
  }

  // A trace axis given as "@shared:<name>" is stored once in data.shared (see html.py).
  var SHARED_REF = "@shared:";

  function resolveShared(fig, shared) {
    var traces = fig.data || [];
    for (var i = 0; i < traces.length; i++) {
      var axes = ["x", "y"];
      for (var j = 0; j < axes.length; j++) {
        var value = traces[i][axes[j]];
        if (typeof value === "string" && value.indexOf(SHARED_REF) === 0) {
          traces[i][axes[j]] = shared[value.slice(SHARED_REF.length)] || [];
        }
      }
    }
    return fig;
  }

  function drawCharts(data, why) {
    var charts = document.querySelectorAll("[data-figure]");
    var figures = data.figures || {};
    for (var i = 0; i < charts.length; i++) {
      var el = charts[i];
      var name = el.getAttribute("data-figure");
      var fig = figures[name];
      if (!fig) {
        continue;
      }
      if (typeof Plotly === "undefined") {
        el.className += " missing";
        el.textContent = "This chart needs plotly.js, which did not load (" + why + ").";
        continue;
      }
      resolveShared(fig, data.shared || {});
      Plotly.newPlot(el, fig.data, fig.layout, {
        responsive: true,
        displaylogo: false,
        modeBarButtonsToRemove: ["select2d", "lasso2d"],
        toImageButtonOptions: { filename: "torchdiag-" + name, scale: 2 }
      });
    }
  }

  function copyText(text, done) {
    // The async clipboard API needs a secure context; a report opened from disk may not be one.
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { legacyCopy(text, done); });
    } else {
      legacyCopy(text, done);
    }
  }

  function legacyCopy(text, done) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try {
      document.execCommand("copy");
      done();
    } catch (err) {
      /* Nothing else to try; the snippet stays selectable by hand. */
    }
    document.body.removeChild(area);
  }

  function wireCopyButtons() {
    var buttons = document.querySelectorAll("button[data-copy]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].addEventListener("click", function (event) {
        var button = event.currentTarget;
        var code = document.getElementById(button.getAttribute("data-copy"));
        if (!code) {
          return;
        }
        copyText(code.textContent, function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        });
      });
    }
  }

  // Sortable tables: a header with data-sort="num" sorts by the cells' data-v (raw numbers),
  // "text" by the shown text. Clicking again reverses; the first click on a number sorts largest
  // first, which is what one looks for in a profile.
  function cellKey(row, col, numeric) {
    var cell = row.cells[col];
    if (!cell) {
      return numeric ? -Infinity : "";
    }
    if (numeric) {
      var v = parseFloat(cell.getAttribute("data-v"));
      return isNaN(v) ? -Infinity : v;
    }
    return cell.textContent.toLowerCase();
  }

  function sortTable(table, col, numeric, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var descending = th.getAttribute("aria-sort") !== (numeric ? "descending" : "ascending");
    if (!numeric) {
      descending = !descending;
    }
    rows.sort(function (a, b) {
      var x = cellKey(a, col, numeric);
      var y = cellKey(b, col, numeric);
      var order = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -order : order;
    });
    for (var i = 0; i < rows.length; i++) {
      body.appendChild(rows[i]);
    }
    markExtraRows(table);
    var heads = th.parentNode.children;
    for (var j = 0; j < heads.length; j++) {
      heads[j].removeAttribute("aria-sort");
    }
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }

  function wireSortableTables() {
    var heads = document.querySelectorAll("table.sortable th[data-sort]");
    for (var i = 0; i < heads.length; i++) {
      (function (th) {
        var handler = function () {
          var table = th.closest("table");
          var col = Array.prototype.indexOf.call(th.parentNode.children, th);
          sortTable(table, col, th.getAttribute("data-sort") === "num", th);
        };
        th.addEventListener("click", handler);
        th.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            handler();
          }
        });
      })(heads[i]);
    }
  }

  // Search boxes filter their table's body rows by substring (case-insensitive, any cell).
  function wireTableSearch() {
    var inputs = document.querySelectorAll("input.table-search[data-table]");
    for (var i = 0; i < inputs.length; i++) {
      inputs[i].addEventListener("input", function (event) {
        var input = event.currentTarget;
        var table = document.getElementById(input.getAttribute("data-table"));
        if (!table) {
          return;
        }
        var needle = input.value.toLowerCase();
        // A filter searches every row, the folded ones too.
        table.classList.toggle("filtering", needle !== "");
        var rows = table.tBodies[0].rows;
        for (var j = 0; j < rows.length; j++) {
          var hit = !needle || rows[j].textContent.toLowerCase().indexOf(needle) !== -1 ||
            (rows[j].cells[0].getAttribute("title") || "").toLowerCase().indexOf(needle) !== -1;
          rows[j].style.display = hit ? "" : "none";
        }
      });
    }
  }

  // Long tables show their first rows (data-shown) and fold the rest: every row stays in the
  // page, a button shows them all. After a sort the first rows in the new order are shown.
  function markExtraRows(table) {
    var shown = parseInt(table.getAttribute("data-shown"), 10);
    if (isNaN(shown)) {
      return;
    }
    var rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      rows[i].classList.toggle("extra", i >= shown);
    }
  }

  function wireShowAll() {
    var buttons = document.querySelectorAll("button.show-all[data-table]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].addEventListener("click", function (event) {
        var button = event.currentTarget;
        var table = document.getElementById(button.getAttribute("data-table"));
        if (!table) {
          return;
        }
        var folded = table.classList.toggle("folded");
        button.setAttribute("aria-expanded", folded ? "false" : "true");
        button.textContent = button.getAttribute(folded ? "data-more" : "data-less");
      });
    }
  }

  // Charts inside a closed <details> have no size when drawn; redraw them when opened.
  function wireDetailsResize() {
    var details = document.querySelectorAll("details");
    for (var i = 0; i < details.length; i++) {
      details[i].addEventListener("toggle", function (event) {
        if (typeof Plotly === "undefined" || !event.currentTarget.open) {
          return;
        }
        var charts = event.currentTarget.querySelectorAll(".js-plotly-plot");
        for (var j = 0; j < charts.length; j++) {
          Plotly.Plots.resize(charts[j]);
        }
      });
    }
  }

  var data = readData();
  wireCopyButtons();
  wireSortableTables();
  wireTableSearch();
  wireShowAll();
  wireDetailsResize();
  var packed = document.getElementById("torchdiag-plotly") !== null;
  loadPlotly().then(
    function () { drawCharts(data, packed ? "it failed to run" : "offline with a CDN report?"); },
    function (err) { drawCharts(data, String((err && err.message) || err)); }
  );
})();
