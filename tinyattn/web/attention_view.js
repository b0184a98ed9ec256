// tinyattn's interactive attention views (tinyattn.interactive): no library, no network.
//
// The page holds one div#tinyattn-view and the data as JSON in the script element #tinyattn-data:
//   mode "head" | "model"; queries (L tokens), keys (S tokens); layers, heads (names); colors (one
//   per head); scale; layout (row, thumb_width, thumb_height: px, set in Python, which sizes the
//   iframe with them); weights[layer][head] = the (L, S) matrix, row-major, as integers: P = w / scale.
// Head view: one line from query i (left) to key j (right) per visible head, opacity = P[i, j]: at
// rest drawn into one canvas per head (a layer switch redraws them, nothing else does); hovering a
// query shows only its row of lines (a key: its column), as SVG <line>s with stroke-opacity = P.
// Model view: a layers x heads grid of thumbnails; a click opens that head in a head view below.
// When drawn, the root gets data-ready="1" and data-ready-ms = milliseconds since navigation started.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var GAP = 170;  // px between the query and the key column
  var ROW, THUMB_W, THUMB_H;  // px per token row, model-view thumbnail size: data.layout (from Python)
  var LEVELS = 32;  // opacity steps of the lines drawn at rest (a hovered token's lines are exact)

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

  // Every line (i, j) of head h in layer l into a canvas of w x ht CSS px: from (x0, y0 + (i + 0.5) yq)
  // to (x1, y0 + (j + 0.5) yk), alpha = P[i, j] rounded to 1/LEVELS. One stroke per level: each stroke
  // composites the whole canvas, so 1/255 steps (a stroke per distinct weight) made a 12-head layer
  // 3x slower to draw than 1/32 steps. Sets data-layer (drawn) and data-lines (lines drawn).
  function drawLines(canvas, data, P, l, h, w, ht, geom) {
    var L = data.queries.length, S = data.keys.length, ratio = window.devicePixelRatio || 1;
    var levels = [], count = 0;
    for (var i = 0; i < L; i++) {
      for (var j = 0; j < S; j++) {
        var level = Math.round(P(l, h, i, j) * LEVELS);
        if (level === 0) continue;
        (levels[level] = levels[level] || []).push(i, j);
        count++;
      }
    }
    if (canvas.width !== w * ratio || canvas.height !== ht * ratio) {
      canvas.width = w * ratio;
      canvas.height = ht * ratio;
      canvas.style.width = w + "px";
      canvas.style.height = ht + "px";
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, ht);
    ctx.strokeStyle = data.colors[h];
    ctx.lineWidth = geom.lineWidth;
    levels.forEach(function (ij, level) {
      ctx.globalAlpha = level / LEVELS;
      ctx.beginPath();
      for (var n = 0; n < ij.length; n += 2) {
        ctx.moveTo(geom.x0, geom.y0 + (ij[n] + 0.5) * geom.yq);
        ctx.lineTo(geom.x1, geom.y0 + (ij[n + 1] + 0.5) * geom.yk);
      }
      ctx.stroke();
    });
    canvas.dataset.layer = String(l);
    canvas.dataset.lines = String(count);
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
    var lines = el("div", "ta-lines", body);
    lines.style.width = GAP + "px";
    lines.style.height = height + "px";
    var kTokens = column(data.keys, "keys");

    // at rest every line of a head is drawn once into that head's canvas (one stroke per opacity level,
    // redrawn only when the layer changes); the lines of a hovered token are SVG elements on top
    var canvases = data.heads.map(function (name, h) {
      var c = el("canvas", "ta-head-lines", lines);
      c.dataset.head = String(h);
      return c;
    });
    var drawnLayer = canvases.map(function () { return -1; });
    var overlay = svgEl("svg", { "class": "ta-focus-lines", width: GAP, height: height }, lines);
    var geometry = { x0: 0, x1: GAP, y0: 0, yq: ROW, yk: ROW, lineWidth: 2 };

    function drawHead(h) {
      drawLines(canvases[h], data, P, state.layer, h, GAP, height, geometry);
      drawnLayer[h] = state.layer;
    }

    function drawFocus() {  // the hovered token's lines, one SVG line per visible head and other token
      var f = state.focus, l = state.layer, markup = [];
      if (f !== null) {
        state.visible.forEach(function (h) {
          markup.push('<g class="ta-head" data-head="' + h + '" stroke="' + data.colors[h] + '">');
          var n = f.side === "queries" ? S : L;
          for (var k = 0; k < n; k++) {
            var i = f.side === "queries" ? f.index : k, j = f.side === "queries" ? k : f.index;
            markup.push('<line class="ta-line" data-i="' + i + '" data-j="' + j + '" x1="0" y1="' + (i + 0.5) * ROW +
                        '" x2="' + GAP + '" y2="' + (j + 0.5) * ROW + '" stroke-opacity="' + P(l, h, i, j) + '"/>');
          }
          markup.push("</g>");
        });
      }
      overlay.innerHTML = markup.join("");
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
        var on = state.visible.indexOf(h) >= 0, rest = on && f === null;
        toggles[h].classList.toggle("ta-off", !on);
        if (rest && drawnLayer[h] !== l) drawHead(h);  // hidden heads are drawn when first shown
        canvases[h].style.display = rest ? "" : "none";
      }
      drawFocus();
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
      paintVisibility();
    }

    function setVisible(heads) {
      state.visible = heads.slice();
      paintVisibility();
    }

    paintVisibility();
    return { setLayer: setLayer, setVisible: setVisible };
  }

  // ---------------------------------------------------------------------------------------------
  // model view: a layers x heads grid of thumbnails; a click opens the head
  // ---------------------------------------------------------------------------------------------
  function modelView(root, data) {
    var P = weightsOf(data);
    var H = data.heads.length;
    var pad = 4, thumbGeometry = { x0: pad, x1: THUMB_W - pad, y0: pad, yq: (THUMB_H - 2 * pad) / data.queries.length,
                                   yk: (THUMB_H - 2 * pad) / data.keys.length, lineWidth: 1 };
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
        c.title = name + ", " + data.heads[h] + " (click to open)";
        drawLines(c, data, P, l, h, THUMB_W, THUMB_H, thumbGeometry);
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
  ROW = data.layout.row;
  THUMB_W = data.layout.thumb_width;
  THUMB_H = data.layout.thumb_height;
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
