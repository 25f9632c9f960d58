"""The page's stylesheet and its one inline script: drawing, cross-filtering, live refresh.

The script reads the figures from the page's ``dashboard-data`` JSON and draws each with
Plotly. Views whose layout has ``meta.crossfilter`` take part in cross-filtering within
their experiment: a box or lasso selection (``points`` views) or an axis constraint
(``parcoords``) selects trials by id, and every other such view follows (points are
highlighted, table rows filtered). The views of a seed-aware search's configurations select
them by config hash, and their ``meta.members`` (config hash -> its replicates' trial ids)
link the two: a selected configuration selects its trials, and a selected trial its
configuration. When every figure is drawn the script sets
``data-ready`` on the body and fires a ``dashboard-rendered`` event. In a live page it
polls ``state.json`` and, when the version changes, fetches ``figures.json`` and redraws:
in place when the same figures and notes (``slots``) stand in the same places, updating the
notices' text, else by swapping in the new markup.
"""

from __future__ import annotations

# Notices and the notes that stand in for a view: the dashboard's and the run report's.
NOTICE_STYLE = """
.notice { border-radius: 4px; padding: 8px 12px; margin: 8px 0; font-size: 14px; }
.notice-info { background: #e8f1fb; border-left: 4px solid #1f77b4; }
.notice-warning { background: #fff5e0; border-left: 4px solid #ff7f0e; }
.notice-error { background: #fdecea; border-left: 4px solid #d62728; }
.view-note { margin: 12px 0; }
"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { position: sticky; top: 0; z-index: 10; background: #1d2330; color: white; padding: 10px 24px;
         display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 20px; margin: 0; }
#selection-status { font-size: 14px; }
#selection-status button { margin-left: 8px; }
main { padding: 8px 24px 40px; }
section.experiment { background: white; border: 1px solid #dde1e8; border-radius: 6px;
                     margin: 16px 0; padding: 8px 16px 16px; }
section h2 { margin: 8px 0 2px; font-size: 18px; }
p.meta { margin: 0 0 8px; color: #5b6475; font-size: 13px; }
.view { margin: 12px 0; min-height: 120px; }
""" + NOTICE_STYLE

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  var config = { responsive: true, displaylogo: false };
  var version = data.version;
  // experiment section id -> { views: [div], links: {id: Set}, picked: Set|null (the source's ids),
  //   selection: Set|null (those and the ids they link to), source: div id }
  var groups = {};
  var status = document.getElementById("selection-status");

  function metaOf(div) { return (div.layout && div.layout.meta) || {}; }

  function showError(div, err) {
    console.error("dashboard view " + div.id + ": " + err);
    div.innerHTML = "";
    var p = document.createElement("p");
    p.className = "notice notice-error";
    p.textContent = "This view could not be drawn: " + err;
    div.appendChild(p);
  }

  function render(figures) {
    var previous = groups;
    groups = {};
    return Promise.all(figures.map(function (f) {
      var div = document.getElementById(f.id);
      if (!div) { return null; }
      div._allCells = null;  // a table's unfiltered rows, taken again from the new figure
      return Plotly.react(div, f.figure.data, f.figure.layout, config)
        .then(function () { register(div, f.group); })
        .catch(function (err) { showError(div, err); });
    })).then(function () {
      Object.keys(previous).forEach(function (g) {
        if (previous[g].picked) { apply(g, Array.from(previous[g].picked), previous[g].source); }
      });
    });
  }

  function register(div, group) {
    var kind = metaOf(div).crossfilter;
    if (!kind) { return; }
    groups[group] = groups[group] || { views: [], links: {}, picked: null, selection: null, source: null };
    groups[group].views.push(div);
    link(groups[group].links, metaOf(div).members || {});
    div.dataset.group = group;
    if (div.dataset.wired) { return; }
    div.dataset.wired = "1";
    if (kind === "points") {
      div.on("plotly_selected", function (event) {
        var ids = event && event.points
          ? event.points.map(function (p) { return p.customdata; })
              .filter(function (id) { return typeof id === "string"; })
          : null;
        apply(div.dataset.group, ids, div.id);
      });
      div.on("plotly_deselect", function () { apply(div.dataset.group, null, div.id); });
    } else if (kind === "parcoords") {
      div.on("plotly_restyle", function () { apply(div.dataset.group, parcoordsSelection(div), div.id); });
    }
  }

  function link(links, members) {
    Object.keys(members).forEach(function (config) {
      members[config].forEach(function (trial) {
        (links[config] = links[config] || new Set()).add(trial);
        (links[trial] = links[trial] || new Set()).add(config);
      });
    });
  }

  function parcoordsSelection(div) {
    var ids = metaOf(div).trial_ids || [];
    var keep = ids.map(function () { return true; });
    var constrained = false;
    div.data[0].dimensions.forEach(function (dim) {
      var ranges = dim.constraintrange;
      if (!ranges || !ranges.length) { return; }
      constrained = true;
      var list = Array.isArray(ranges[0]) ? ranges : [ranges];
      dim.values.forEach(function (v, i) {
        if (!list.some(function (r) { return v >= r[0] && v <= r[1]; })) { keep[i] = false; }
      });
    });
    return constrained ? ids.filter(function (id, i) { return keep[i]; }) : null;
  }

  function apply(group, ids, sourceId) {
    var g = groups[group];
    if (!g) { return; }
    g.picked = ids ? new Set(ids) : null;
    g.selection = ids ? new Set(ids) : null;
    if (ids) {
      ids.forEach(function (id) { (g.links[id] || []).forEach(function (other) { g.selection.add(other); }); });
    }
    g.source = ids ? sourceId : null;
    g.views.forEach(function (div) { if (div.id !== sourceId) { follow(div, g.selection); } });
    showStatus();
  }

  function follow(div, selected) {
    var kind = metaOf(div).crossfilter;
    if (kind === "table") {
      filterTable(div, selected);
    } else if (kind === "points") {
      var traces = [], points = [];
      div.data.forEach(function (trace, t) {
        if (!trace.customdata) { return; }
        traces.push(t);
        points.push(selected ? indicesIn(trace.customdata, selected) : null);
      });
      if (traces.length) { Plotly.restyle(div, { selectedpoints: points }, traces); }
    }
    div.dataset.selected = selected ? String(selected.size) : "";
  }

  function indicesIn(ids, selected) {
    var out = [];
    ids.forEach(function (id, i) { if (selected.has(id)) { out.push(i); } });
    return out;
  }

  function filterTable(div, selected) {
    var meta = metaOf(div);
    if (!div._allCells) { div._allCells = div.data[0].cells.values; div._fullHeight = div.layout.height; }
    var ids = meta.trial_ids || [];
    var rows = selected ? indicesIn(ids, selected) : ids.map(function (id, i) { return i; });
    var columns = div._allCells.map(function (col) { return rows.map(function (i) { return col[i]; }); });
    Plotly.restyle(div, { "cells.values": [columns] }, [0]);
    if (meta.row_height) {
      Plotly.relayout(div, { height: div._fullHeight - meta.row_height * (ids.length - rows.length) });
    }
  }

  function clearSelection(group) {
    var g = groups[group];
    g.views.forEach(function (div) {
      var kind = metaOf(div).crossfilter;
      if (kind === "parcoords") {
        var update = {};
        div.data[0].dimensions.forEach(function (d, i) { update["dimensions[" + i + "].constraintrange"] = null; });
        Plotly.restyle(div, update, [0]);
      } else if (kind === "points") {
        Plotly.relayout(div, { selections: [] });
      }
    });
    apply(group, null, null);
  }

  function showStatus() {
    status.textContent = "";
    Object.keys(groups).forEach(function (group) {
      var g = groups[group];
      if (!g.selection) { return; }
      var span = document.createElement("span");
      var source = document.getElementById(g.source);
      var where = source ? source.dataset.title : "a view";
      var unit = (source && metaOf(source).unit) || "trials";
      span.textContent = g.picked.size + " " + unit + " selected in " + where + " (" + group + ")";
      var button = document.createElement("button");
      button.textContent = "clear";
      button.onclick = function () { clearSelection(group); };
      span.appendChild(button);
      status.appendChild(span);
    });
    if (!status.childNodes.length) {
      status.textContent = "Select trials in a history, slice, timeline or Pareto view (box or lasso), " +
        "or drag along a parallel-coordinates axis: the other views follow.";
    }
  }

  function poll() {
    fetch("state.json", { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (state) {
        if (state.version === version) { return null; }
        return fetch("figures.json", { cache: "no-store" }).then(function (r) { return r.json(); }).then(update);
      })
      .catch(function (err) {
        document.getElementById("live-status").textContent = "live: connection lost (" + err + ")";
      });
  }

  function update(next) {
    function slots(d) { return (d.slots || d.figures.map(function (f) { return f.id; })).join(); }
    var sameViews = slots(next) === slots(data);  // the same figures and notes, in the same places
    version = next.version;
    data = next;
    if (sameViews) {
      Object.keys(next.notices).forEach(function (id) {
        var box = document.getElementById(id);
        if (box) { box.innerHTML = next.notices[id]; }
      });
    } else {
      document.getElementById("content").innerHTML = next.html;
    }
    document.getElementById("live-status").textContent = "live: updated " + new Date().toLocaleTimeString();
    return render(next.figures).then(rendered);
  }

  function rendered() {
    document.body.dataset.ready = "true";
    document.dispatchEvent(new Event("dashboard-rendered"));
  }

  showStatus();
  render(data.figures).then(rendered);
  if (data.live) { setInterval(poll, data.poll_ms); }
})();
"""
