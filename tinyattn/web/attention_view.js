// tinyattn's interactive attention views (tinyattn.interactive): no library, no network.
//
// The page holds one <div id="tinyattn-view"> and the data as JSON in <script id="tinyattn-data">:
//   mode "head" | "model"; queries (L tokens), keys (S tokens); layers, heads (names); colors (one
//   per head); scale; weights[layer][head] = the (L, S) matrix, row-major, as integers: P = w / scale.
// Head view: one line from query i (left) to key j (right) per visible head, stroke-opacity = P[i, j].
// Hovering a query shows only its row of lines (a key: its column). Model view: a layers x heads grid
// of thumbnails; a click opens that head in a head view below. When drawn, the root gets
// data-ready="1" and data-ready-ms = milliseconds since navigation started.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var ROW = 20;  // px per token row
  var GAP = 170;  // px between the query and the key column
  var THUMB_W = 64;  // px of a model-view thumbnail

  function el(tag, cls, parent, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function svgEl(tag, attrs, parent) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    parent.appendChild(e);
    return e;
  }

  function weightsOf(data) {
    var S = data.keys.length, scale = data.scale;
    return function (l, h, i, j) { return data.weights[l][h][i * S + j] / scale; };
  }

  // ---------------------------------------------------------------------------------------------
  // head view: tokens in two columns, lines between them
  // ---------------------------------------------------------------------------------------------
  function headView(root, data, opts) {
    var P = weightsOf(data);
    var L = data.queries.length, S = data.keys.length, H = data.heads.length;
    var state = { layer: opts.layer, visible: opts.visible.slice(), focus: null };

    var controls = el("div", "ta-controls", root);
    var select = null;
    if (data.layers.length > 1) {
      el("span", "ta-label", controls, "layer ");
      select = el("select", "ta-layer", controls);
      data.layers.forEach(function (name, l) {
        var o = el("option", null, select, name);
        o.value = String(l);
      });
      select.value = String(state.layer);
      select.addEventListener("change", function () { setLayer(+select.value); });
    } else {
      el("span", "ta-label", controls, data.layers[0]);
    }
    el("span", "ta-label", controls, "  heads ");
    var toggles = data.heads.map(function (name, h) {
      var t = el("span", "ta-head-toggle", controls, String(h));
      t.dataset.head = String(h);
      t.title = name + " (click to show or hide)";
      t.style.background = data.colors[h];
      t.addEventListener("click", function () {
        var k = state.visible.indexOf(h);
        if (k >= 0) state.visible.splice(k, 1); else state.visible.push(h);
        paintVisibility();
      });
      return t;
    });
    el("span", "ta-hint", controls, "hover a token to isolate it");

    var body = el("div", "ta-body", root);
    function column(tokens, side) {
      var col = el("div", "ta-col ta-" + side, body);
      return tokens.map(function (text, i) {
        var t = el("div", "ta-token", col, text);
        t.dataset.side = side;
        t.dataset.index = String(i);
        t.addEventListener("mouseenter", function () { state.focus = { side: side, index: i }; paintVisibility(); });
        t.addEventListener("mouseleave", function () { state.focus = null; paintVisibility(); });
        return t;
      });
    }
    var qTokens = column(data.queries, "queries");
    var height = Math.max(L, S) * ROW;
    var svg = svgEl("svg", { "class": "ta-lines", width: GAP, height: height }, body);
    var kTokens = column(data.keys, "keys");

    // the lines as one piece of markup (much faster to parse than element-by-element building)
    var markup = [];
    for (var h = 0; h < H; h++) {
      markup.push('<g class="ta-head" data-head="' + h + '" stroke="' + data.colors[h] + '">');
      for (var i = 0; i < L; i++) {
        for (var j = 0; j < S; j++) {
          markup.push('<line class="ta-line" data-i="' + i + '" data-j="' + j + '" x1="0" y1="' + (i + 0.5) * ROW +
                      '" x2="' + GAP + '" y2="' + (j + 0.5) * ROW + '"/>');
        }
      }
      markup.push("</g>");
    }
    svg.innerHTML = markup.join("");
    var groups = Array.prototype.slice.call(svg.children);
    var lines = groups.map(function (g) { return Array.prototype.slice.call(g.children); });  // [h][i * S + j]
    var shown = lines.map(function (row) { return row.map(function () { return true; }); });

    function paintWeights() {
      for (var h = 0; h < H; h++) {
        for (var i = 0; i < L; i++) {
          for (var j = 0; j < S; j++) lines[h][i * S + j].setAttribute("stroke-opacity", P(state.layer, h, i, j));
        }
      }
    }

    function shade(tokens, weightAt) {  // the other column: mean weight over the visible heads
      tokens.forEach(function (t, k) {
        if (weightAt === null || state.visible.length === 0) {
          t.style.background = "";
          delete t.dataset.weight;
          return;
        }
        var sum = 0;
        state.visible.forEach(function (h) { sum += weightAt(h, k); });
        var w = sum / state.visible.length;
        t.style.background = "rgba(42, 157, 143, " + w.toFixed(4) + ")";
        t.dataset.weight = w.toFixed(4);
      });
    }

    function paintVisibility() {
      var f = state.focus, l = state.layer;
      for (var h = 0; h < H; h++) {
        var on = state.visible.indexOf(h) >= 0;
        groups[h].style.display = on ? "" : "none";
        toggles[h].classList.toggle("ta-off", !on);
        for (var i = 0; i < L; i++) {
          for (var j = 0; j < S; j++) {
            var show = f === null || (f.side === "queries" ? i === f.index : j === f.index);
            if (show !== shown[h][i * S + j]) {  // touch only the lines that change
              lines[h][i * S + j].style.display = show ? "" : "none";
              shown[h][i * S + j] = show;
            }
          }
        }
      }
      qTokens.concat(kTokens).forEach(function (t) { t.classList.remove("ta-focus"); });
      if (f === null) {
        shade(qTokens, null);
        shade(kTokens, null);
      } else if (f.side === "queries") {
        qTokens[f.index].classList.add("ta-focus");
        shade(qTokens, null);
        shade(kTokens, function (h, j) { return P(l, h, f.index, j); });
      } else {
        kTokens[f.index].classList.add("ta-focus");
        shade(kTokens, null);
        shade(qTokens, function (h, i) { return P(l, h, i, f.index); });
      }
    }

    function setLayer(l) {
      state.layer = l;
      if (select) select.value = String(l);
      paintWeights();
      paintVisibility();
    }

    function setVisible(heads) {
      state.visible = heads.slice();
      paintVisibility();
    }

    paintWeights();
    paintVisibility();
    return { setLayer: setLayer, setVisible: setVisible };
  }

  // ---------------------------------------------------------------------------------------------
  // model view: a layers x heads grid of thumbnails; a click opens the head
  // ---------------------------------------------------------------------------------------------
  function drawThumb(canvas, data, P, l, h) {
    var L = data.queries.length, S = data.keys.length;
    var w = THUMB_W, ht = +canvas.dataset.height, pad = 4, ratio = window.devicePixelRatio || 1;
    canvas.width = w * ratio;
    canvas.height = ht * ratio;
    canvas.style.width = w + "px";
    canvas.style.height = ht + "px";
    var ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.strokeStyle = data.colors[h];
    ctx.lineWidth = 1;
    var levels = 32, paths = [];  // lines grouped by opacity: one stroke per level
    for (var k = 0; k <= levels; k++) paths.push([]);
    for (var i = 0; i < L; i++) {
      for (var j = 0; j < S; j++) {
        var level = Math.round(P(l, h, i, j) * levels);
        if (level > 0) paths[level].push(i, j);
      }
    }
    var yq = (ht - 2 * pad) / L, yk = (ht - 2 * pad) / S;
    for (k = 1; k <= levels; k++) {
      if (paths[k].length === 0) continue;
      ctx.globalAlpha = k / levels;
      ctx.beginPath();
      for (var n = 0; n < paths[k].length; n += 2) {
        ctx.moveTo(pad, pad + (paths[k][n] + 0.5) * yq);
        ctx.lineTo(w - pad, pad + (paths[k][n + 1] + 0.5) * yk);
      }
      ctx.stroke();
    }
  }

  function modelView(root, data) {
    var P = weightsOf(data);
    var H = data.heads.length;
    var thumbHeight = Math.min(100, Math.max(48, 3 * Math.max(data.queries.length, data.keys.length)));
    el("div", "ta-hint", root, "click a head to open it");
    var both = el("div", "ta-model", root);
    var grid = el("div", "ta-grid", both);
    grid.style.gridTemplateColumns = "auto repeat(" + H + ", " + (THUMB_W + 6) + "px)";
    el("div", "ta-grid-corner", grid, "layer \\ head");
    data.heads.forEach(function (name, h) {
      var c = el("div", "ta-grid-head", grid, String(h));
      c.title = name;
    });
    var thumbs = [];
    data.layers.forEach(function (name, l) {
      el("div", "ta-grid-layer", grid, name);
      for (var h = 0; h < H; h++) {
        var c = el("canvas", "ta-thumb", grid);
        c.dataset.layer = String(l);
        c.dataset.head = String(h);
        c.dataset.height = String(thumbHeight);
        c.title = name + ", " + data.heads[h] + " (click to open)";
        drawThumb(c, data, P, l, h);
        c.addEventListener("click", open.bind(null, l, h));
        thumbs.push(c);
      }
    });
    var detail = el("div", "ta-detail", both);
    detail.hidden = true;
    var caption = el("div", "ta-detail-title", detail);
    var view = null;

    function open(l, h) {
      detail.hidden = false;
      caption.textContent = data.layers[l] + ", " + data.heads[h];
      thumbs.forEach(function (t) {
        t.classList.toggle("ta-selected", +t.dataset.layer === l && +t.dataset.head === h);
      });
      if (view === null) {
        view = headView(detail, data, { layer: l, visible: [h] });
      } else {
        view.setLayer(l);
        view.setVisible([h]);
      }
      root.dataset.open = l + "," + h;
    }
  }

  // ---------------------------------------------------------------------------------------------
  var root = document.getElementById("tinyattn-view");
  var data = JSON.parse(document.getElementById("tinyattn-data").textContent);
  if (data.title) el("div", "ta-title", root, data.title);
  if (data.mode === "model") {
    modelView(root, data);
  } else {
    headView(root, data, { layer: data.layer, visible: data.visible });
  }
  requestAnimationFrame(function () {
    requestAnimationFrame(function () {  // the first frame with the view has been drawn
      root.dataset.readyMs = performance.now().toFixed(1);
      root.dataset.ready = "1";
    });
  });
})();
