// The operations dashboard (/ops/): polls the merged counters of every replica every
// 2 s and draws them as inline SVG. No third-party code; data is written as text only.
// A line chart's legend is an HTML list under it (it wraps at any width instead of
// overlapping the axis); colours come from classes (ops.css), never from inline style.
(function () {
  "use strict";
  var root = document.getElementById("ops");
  if (!root) return;
  var SOURCE = root.dataset.source;
  var EVERY_MS = 2000;
  var KEEP = 150; // points of history: 5 minutes
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"];
  var SVG = "http://www.w3.org/2000/svg";
  var W = 360, H = 150, LEFT = 90, AXIS = 44, TOP = 8, BOTTOM = 18;
  var CHAR = 6.2; // the width of one character at the charts' 11 px font, roughly
  var history = {lag: [], queue: [], rates: []};
  // The panels apps registered (scaling.ops.dashboard.register_panel): one line chart each.
  var panels = Array.prototype.slice.call(root.querySelectorAll("svg[data-panel]"));
  var panelHistory = {};
  panels.forEach(function (svg) { panelHistory[svg.dataset.panel] = []; });
  var previous = null;

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

  function empty(svg, message) {
    svg.appendChild(el("text", {x: 10, y: H / 2, "class": "note"}, message));
  }

  // Horizontal bars: rows of [label, value, caption].
  function bars(id, rows, max) {
    var svg = document.getElementById(id);
    clear(svg);
    if (!rows.length) return empty(svg, "nothing yet");
    var top = max || Math.max.apply(null, rows.map(function (r) { return r[1]; }).concat([1]));
    var step = Math.min(24, (H - TOP) / rows.length);
    rows.forEach(function (row, i) {
      var y = TOP + i * step;
      var width = Math.max((W - LEFT - 4) * (row[1] / top), 1);
      var label = el("text", {x: 0, y: y + step * 0.6}, fit(row[0], LEFT - 6));
      label.appendChild(el("title", {}, row[0]));
      svg.appendChild(label);
      svg.appendChild(el("rect", {x: LEFT, y: y, width: width, height: step * 0.7,
                                  fill: COLORS[i % COLORS.length]}));
      // The caption goes right of the bar if it fits there, else inside its end.
      var caption = String(row[2]);
      var outside = LEFT + width + 4 + caption.length * CHAR <= W;
      svg.appendChild(el("text", outside ? {x: LEFT + width + 4, y: y + step * 0.6}
                                         : {x: LEFT + width - 4, y: y + step * 0.6, "text-anchor": "end", "class": "on-bar"},
                         caption));
    });
  }

  // A label cut to what fits in ``room`` pixels (the whole of it is in the <title>).
  function fit(text, room) {
    var most = Math.floor(room / CHAR);
    return text.length <= most ? text : text.slice(0, Math.max(most - 1, 1)) + "…";
  }

  // The legend list right after a chart, made on first use.
  function legendOf(svg) {
    var list = svg.nextElementSibling;
    if (!list || !list.classList.contains("ops-legend")) {
      list = document.createElement("ul");
      list.className = "ops-legend";
      svg.parentNode.insertBefore(list, svg.nextSibling);
    }
    while (list.firstChild) list.removeChild(list.firstChild);
    return list;
  }

  // Lines over time: series is [{time, values: {name: number}}].
  function lines(id, series) {
    var svg = document.getElementById(id);
    clear(svg);
    var legend = legendOf(svg);
    var names = {};
    series.forEach(function (p) { Object.keys(p.values).forEach(function (n) { names[n] = true; }); });
    names = Object.keys(names).sort();
    if (!names.length) return empty(svg, "nothing yet");
    var top = 0;
    series.forEach(function (p) { names.forEach(function (n) { top = Math.max(top, p.values[n] || 0); }); });
    top = top > 0 ? top * 1.1 : 1;
    var x = function (i) { return AXIS + (W - AXIS - 4) * (series.length > 1 ? i / (series.length - 1) : 1); };
    var y = function (v) { return TOP + (H - TOP - BOTTOM) * (1 - v / top); };
    svg.appendChild(el("line", {x1: AXIS, y1: y(0), x2: W, y2: y(0), "class": "axis"}));
    svg.appendChild(el("text", {x: AXIS - 4, y: y(top) + 8, "text-anchor": "end"}, format(top)));
    svg.appendChild(el("text", {x: AXIS - 4, y: y(0), "text-anchor": "end"}, "0"));
    names.forEach(function (name, k) {
      var color = COLORS[k % COLORS.length];
      var points = series.map(function (p, i) {
        return x(i).toFixed(1) + "," + y(p.values[name] || 0).toFixed(1);
      });
      svg.appendChild(el("polyline", {points: points.join(" "), fill: "none", stroke: color, "stroke-width": 1.5}));
      var last = series[series.length - 1].values[name];
      var item = document.createElement("li");
      item.className = "c" + (k % COLORS.length);
      var label = document.createElement("span");
      label.textContent = name;
      var value = document.createElement("b");
      value.textContent = last === undefined || last === null ? "–" : format(last);
      item.appendChild(label);
      item.appendChild(value);
      legend.appendChild(item);
    });
    svg.appendChild(el("text", {x: AXIS, y: H - 4, "class": "note"}, "last " + Math.round(series.length * EVERY_MS / 1000) + " s"));
  }

  function format(v) {
    if (v === null || v === undefined) return "–";
    return Math.abs(v) >= 100 ? Math.round(v).toString() : (Math.round(v * 100) / 100).toString();
  }

  function push(list, point) {
    list.push(point);
    if (list.length > KEEP) list.shift();
  }

  function tableRows(id, rows) {
    var body = document.getElementById(id);
    while (body.firstChild) body.removeChild(body.firstChild);
    rows.forEach(function (cells) {
      var tr = document.createElement("tr");
      cells.forEach(function (cell) {
        var td = document.createElement("td");
        td.textContent = cell;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function draw(data) {
    var rates = {};
    data.replicas.forEach(function (r) {
      var before = previous && previous.requests[r.replica];
      var seconds = previous ? data.time - previous.time : 0;
      rates[r.replica] = before !== undefined && seconds > 0 ? Math.max(0, (r.requests - before) / seconds) : null;
    });
    previous = {time: data.time, requests: {}};
    data.replicas.forEach(function (r) { previous.requests[r.replica] = r.requests; });

    bars("ops-requests", data.replicas.map(function (r) { return [r.replica, r.requests, format(r.requests)]; }));
    var rateValues = {};
    Object.keys(rates).forEach(function (k) { if (rates[k] !== null) rateValues[k] = rates[k]; });
    push(history.rates, {values: rateValues});
    lines("ops-rates", history.rates);
    bars("ops-caches", Object.keys(data.caches).sort().map(function (name) {
      var c = data.caches[name];
      var ratio = c.ratio === null ? 0 : c.ratio;
      return [name, ratio, Math.round(ratio * 100) + "% of " + format(c.hit + c.miss)];
    }), 1);

    var lag = {};
    Object.keys(data.replica_lag).forEach(function (alias) {
      var s = data.replica_lag[alias];
      lag[alias + (s.healthy ? "" : " (out)")] = s.lag_seconds;
    });
    push(history.lag, {values: lag});
    lines("ops-lag", history.lag);
    push(history.queue, {values: data.queues});
    lines("ops-queue", history.queue);
    panels.forEach(function (svg) {
      var name = svg.dataset.panel;
      push(panelHistory[name], {values: data[name] || {}});
      lines(svg.id, panelHistory[name]);
    });

    tableRows("ops-replicas", data.replicas.map(function (r) {
      return [r.replica, format(r.requests), format(rates[r.replica]), format(r.errors), format(r.mean_ms),
              format(r.sockets), r.age_seconds + " s ago"];
    }));
    tableRows("ops-statements", Object.keys(data.statements).sort().map(function (alias) {
      return [alias, format(data.statements[alias].read), format(data.statements[alias].write)];
    }));
    document.getElementById("ops-status").textContent =
      data.replicas.length + " replicas reporting, " + data.sockets + " sockets open; updated " +
      new Date(data.time * 1000).toLocaleTimeString();
  }

  function poll() {
    fetch(SOURCE, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(draw)
      .catch(function (error) {
        document.getElementById("ops-status").textContent = "Could not update: " + error.message;
      })
      .then(function () { setTimeout(poll, EVERY_MS); });
  }

  poll();
})();
