"""The page at ``/`` to try a served model: a form built from ``GET /metadata``, the prediction with
class probabilities as bars, and the per-input explanation. Plain HTML + a little JavaScript, no build.

The page posts ``multipart/form-data`` to ``/predict?explain=true``: the same endpoint, limits and
checks as any client (files are uploaded, never read by path).
"""

from __future__ import annotations

#: File pickers' ``accept`` per input kind (a hint for the browser; the server checks the bytes).
ACCEPT = {
    "image": "image/*",
    "audio": "audio/*,.wav,.flac,.ogg,.npy",
    "sequence": ".npy,.csv,.json,.txt",
    "video": "video/*,.mp4,.webm,.avi,.mkv,.gif,.npy",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>polyfuse: try the model</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.5rem; }
  label { display: block; margin: .6rem 0 .2rem; font-weight: 600; }
  .hint { font-weight: normal; color: #666; font-size: .85rem; }
  input[type=text], input[type=number], textarea { width: 100%; box-sizing: border-box; padding: .3rem; }
  button { display: block; margin-top: 1rem; padding: .5rem 1.2rem; font-size: 1rem; }
  .bar { display: flex; align-items: center; gap: .5rem; margin: .15rem 0; font-size: .9rem; }
  .bar .name { width: 10rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar .track { flex: 1; background: #eee; height: .9rem; position: relative; }
  .bar .fill { background: #3b7dd8; height: 100%; position: absolute; top: 0; }
  .bar .fill.negative { background: #d8703b; }
  .bar .value { width: 4.5rem; text-align: right; font-variant-numeric: tabular-nums; }
  .error { color: #b00020; white-space: pre-wrap; }
  .label { font-size: 1.3rem; font-weight: 700; }
  #meta { color: #555; font-size: .9rem; }
</style>
</head>
<body>
<h1>Try the model</h1>
<p id="meta">loading the model's inputs…</p>
<form id="form"></form>
<div id="error" class="error" role="alert"></div>
<div id="result"></div>
<script>
const ACCEPT = __ACCEPT__;
const form = document.getElementById("form");
const result = document.getElementById("result");
const error = document.getElementById("error");

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function bars(values, signed) {
  const box = el("div");
  const scale = Math.max(1e-9, ...Object.values(values).map(Math.abs));
  for (const [name, value] of Object.entries(values)) {
    const row = el("div", {class: "bar", "data-name": name});
    const track = el("div", {class: "track"});
    const width = signed ? 50 * Math.abs(value) / scale : 100 * Math.max(0, Math.min(1, value));
    const fill = el("div", {class: "fill" + (value < 0 ? " negative" : "")});
    fill.style.width = width + "%";
    fill.style.left = signed ? (value < 0 ? 50 - width : 50) + "%" : "0";
    track.appendChild(fill);
    row.append(el("span", {class: "name", title: name}, name), track, el("span", {class: "value"}, value.toFixed(3)));
    box.appendChild(row);
  }
  return box;
}

function field(spec, kind) {
  const id = "field-" + spec.name;
  const label = el("label", {for: id}, spec.name + " ");
  const what = spec.role === "file" ? kind + " file" : kind + ": " + spec.expects;
  label.appendChild(el("span", {class: "hint"}, "(" + what + "; leave empty for missing)"));
  let input;
  if (spec.role === "file") input = el("input", {type: "file", accept: ACCEPT[kind] || ""});
  else if (spec.role === "number") input = el("input", {type: "number", step: "any"});
  else if (spec.role === "text" && kind === "text") input = el("textarea", {rows: 3});
  else input = el("input", {type: "text"});
  input.id = id; input.name = spec.name;
  return [label, input];
}

function show(body, meta) {
  result.replaceChildren();
  for (const [task, out] of Object.entries(body.predictions)) {
    const section = el("section", {class: "task", "data-task": task});
    section.appendChild(el("h2", {}, task + " (" + meta.tasks[task].type + ")"));
    if ("label" in out) section.appendChild(el("div", {class: "label", "data-role": "label"}, String(out.label)));
    if ("labels" in out) section.appendChild(el("div", {class: "label", "data-role": "label"}, out.labels.join(", ") || "(none)"));
    if ("value" in out) section.appendChild(el("div", {class: "label", "data-role": "label"}, JSON.stringify(out.value)));
    if (out.probabilities) {
      section.appendChild(el("h3", {}, "probabilities"));
      const probs = bars(out.probabilities, false); probs.setAttribute("data-role", "probabilities");
      section.appendChild(probs);
    }
    const contributions = body.explanation && body.explanation.contributions[task];
    if (contributions) {
      section.appendChild(el("h3", {}, "what each input contributed (change when it is left out)"));
      const explained = bars(contributions, true); explained.setAttribute("data-role", "explanation");
      section.appendChild(explained);
    }
    result.appendChild(section);
  }
  const weights = body.explanation && body.explanation.fusion_weights;
  if (weights) {
    result.appendChild(el("h2", {}, "fusion weights"));
    result.appendChild(bars(weights, false));
  }
  if (body.missing.length) result.appendChild(el("p", {id: "missing"}, "missing inputs: " + body.missing.join(", ")));
  if (body.problems.length) result.appendChild(el("p", {id: "problems"}, "problems: " + body.problems.join("; ")));
  result.setAttribute("data-state", "done");
}

async function start() {
  const meta = await (await fetch("metadata")).json();
  document.getElementById("meta").textContent =
    meta.source + " (" + meta.backend + ", polyfuse " + meta.polyfuse_version + "); files up to " + meta.limits.max_file_mb + " MB";
  for (const input of meta.inputs) for (const spec of input.fields) form.append(...field(spec, input.kind));
  const button = el("button", {type: "submit", id: "submit"}, "Predict");
  form.appendChild(button);
  form.setAttribute("data-state", "ready");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = ""; result.setAttribute("data-state", "waiting"); button.disabled = true;
    const data = new FormData();
    for (const node of form.querySelectorAll("input, textarea")) {
      if (node.type === "file") { if (node.files.length) data.append(node.name, node.files[0]); }
      else if (node.value !== "") data.append(node.name, node.value);
    }
    try {
      const response = await fetch("predict?explain=true", {method: "POST", body: data});
      const body = await response.json();
      if (!response.ok) { error.textContent = response.status + ": " + (body.detail || JSON.stringify(body)); result.setAttribute("data-state", "error"); }
      else show(body, meta);
    } catch (exc) {
      error.textContent = String(exc); result.setAttribute("data-state", "error");
    } finally { button.disabled = false; }
  });
}
start().catch((exc) => { error.textContent = "could not read /metadata: " + exc; });
</script>
</body>
</html>
"""


def render_page() -> str:
    """The page's HTML (the same for every model: the form is built from ``/metadata`` in the browser)."""
    import json

    return PAGE.replace("__ACCEPT__", json.dumps(ACCEPT))
