// The dashboard's only script (the CSP allows no inline code). It does three things:
// refreshes <main> by fetching this page with ?partial=1 (rendered and escaped on the
// server), draws the per-minute charts from /api/.../history, and asks before a
// single action that has data-confirm. Bulk actions are confirmed by the server.
"use strict";

(function () {
  const main = document.getElementById("main");
  const live = document.getElementById("live");

  function busy() {
    // Never swap the page under someone typing, selecting or reading a details block.
    const active = document.activeElement;
    if (active && main.contains(active) && active.matches("input, textarea, select")) return true;
    const selection = window.getSelection();
    return Boolean(selection && selection.toString());
  }

  async function refresh() {
    if (document.hidden || busy()) return;
    const url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { "X-Partial": "1" } });
      if (!response.ok) throw new Error(String(response.status));
      const html = await response.text();
      const open = new Set([...main.querySelectorAll("details[open] summary")].map((s) => s.textContent));
      main.innerHTML = html;
      main.querySelectorAll("details summary").forEach((s) => {
        if (open.has(s.textContent)) s.parentElement.open = true;
      });
      if (live) live.classList.remove("stale");
    } catch (err) {
      if (live) live.classList.add("stale");
    }
  }

  function drawChart(box) {
    if (typeof uPlot === "undefined") return;
    fetch(box.dataset.history, { credentials: "same-origin" })
      .then((r) => r.json())
      .then((minutes) => {
        const data = [
          minutes.map((m) => m.minute),
          minutes.map((m) => m.enqueued),
          minutes.map((m) => m.completed),
          minutes.map((m) => m.failed),
        ];
        const opts = {
          width: Math.max(300, (box.parentElement || box).clientWidth - 20),
          height: 160,
          series: [
            {},
            { label: "enqueued", stroke: "#4a78c2" },
            { label: "completed", stroke: "#2e8b57" },
            { label: "failed", stroke: "#c0392b" },
          ],
          axes: [{}, { size: 50 }],
        };
        if (box._plot) {
          box._plot.setData(data);
        } else {
          box.textContent = "";
          box._plot = new uPlot(opts, data, box);
        }
        box.dataset.drawn = "1";
      })
      .catch(() => box.classList.add("stale"));
  }

  function drawCharts() {
    document.querySelectorAll(".chart[data-history]").forEach(drawChart);
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    drawCharts();
    const every = Number(main && main.dataset.refresh);
    if (main && every > 0) window.setInterval(refresh, every);
    window.setInterval(drawCharts, 30000); // counters are per minute: no need to go faster
  });
})();
