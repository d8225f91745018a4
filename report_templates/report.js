/* torchdiag report: draws the charts from the JSON data island and wires the copy buttons.
   Runs once after plotly.js; needs no network. */
(function () {
  "use strict";

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

  function drawCharts(data) {
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
        el.textContent = "This chart needs plotly.js, which did not load (offline with a CDN report?).";
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

  var data = readData();
  drawCharts(data);
  wireCopyButtons();
})();
