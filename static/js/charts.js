/* Draws every chart on the page (canvas[data-chart]) from its JSON data element with the vendored
   Chart.js. Progressive enhancement: each chart's numbers are also in a table, which stays open when
   this script does not run; once a chart is drawn, its table folds into a "Table" disclosure.
   No inline script or style: the data is read from <script type="application/json">, which the
   Content-Security-Policy allows, and colours from the stylesheet's custom properties. */
(function () {
  "use strict";
  if (typeof window.Chart === "undefined") return;

  const css = getComputedStyle(document.documentElement);
  // Stored codes that have a colour of their own; any other series takes the next palette colour.
  const NAMED = {
    negative: "--neg", neutral: "--neu", positive: "--pos",
    accepted: "--ok", corrected: "--accent", rejected: "--danger",
    service: "--chart-2", medical: "--chart-3", education: "--chart-4",
    mean: "--chart-1", max: "--chart-4", submissions: "--chart-1",
  };
  const PALETTE = ["--chart-1", "--chart-2", "--chart-3", "--chart-4", "--chart-5", "--chart-6"];
  // A label-axis tick holds about this many Latin letters per pixel of chart width (CJK count twice).
  const TICK_UNITS_PER_PX = 1 / 14;
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  function colour(key, index) {
    return css.getPropertyValue(NAMED[key] || PALETTE[index % PALETTE.length]).trim() || "#4f46e5";
  }

  function units(char) {
    return char.codePointAt(0) > 0x2e7f ? 2 : 1; // CJK and other wide scripts
  }

  // Labels that name several things ("Customer service · org/model") get a line each; a line too long
  // for the room drops a model id's organisation, then its end. The table beside has them whole.
  function shorten(text, room) {
    let chars = Array.from(text);
    const width = (list) => list.reduce((sum, char) => sum + units(char), 0);
    if (width(chars) > room && text.includes("/")) chars = Array.from(text.slice(text.lastIndexOf("/") + 1));
    if (width(chars) <= room) return chars.join("");
    while (chars.length > 1 && width(chars) > room - 1) chars.pop();
    return chars.join("") + "…";
  }

  function tickLines(label, room) {
    const parts = label.split(" · ");
    return parts.length > 1 ? parts.map((part) => shorten(part, room)) : shorten(label, room);
  }

  function draw(canvas) {
    const source = document.getElementById(canvas.dataset.chart);
    if (!source) return;
    const data = JSON.parse(source.textContent);
    const counts = data.series.every((series) => series.values.every(Number.isInteger));
    const valueAxis = {
      beginAtZero: true,
      stacked: data.stacked,
      title: { display: true, text: data.valueTitle },
      ticks: counts ? { precision: 0 } : {},
    };
    const labelAxis = {
      stacked: data.stacked,
      ticks: {
        callback(value) {
          const room = Math.max(10, Math.round(canvas.clientWidth * TICK_UNITS_PER_PX * (data.horizontal ? 0.45 : 1)));
          return tickLines(String(this.getLabelForValue(value)), room);
        },
      },
    };
    canvas.closest("[data-chart-box]").hidden = false;
    new window.Chart(canvas, {
      type: data.type,
      data: {
        labels: data.labels,
        datasets: data.series.map((series, index) => ({
          label: series.name,
          data: series.values,
          backgroundColor: colour(series.key, index),
          borderColor: colour(series.key, index),
        })),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        locale: document.documentElement.lang || undefined,
        indexAxis: data.horizontal ? "y" : "x",
        animation: reducedMotion ? false : undefined,
        scales: data.horizontal ? { x: valueAxis, y: labelAxis } : { x: labelAxis, y: valueAxis },
        plugins: { legend: { display: data.series.length > 1, position: "bottom" } },
      },
    });
    const card = canvas.closest(".chart-card");
    const details = card && card.querySelector("[data-chart-details]");
    if (details) details.open = false;
  }

  document.querySelectorAll("canvas[data-chart]").forEach(draw);
})();
