"""The live status page served at ``/`` by ``--http-port``: one self-contained HTML document.

It polls ``/status.json`` (see :mod:`microagent.launcher.snapshot`) every
second and redraws its table: every agent replica with its process, state,
restarts, message counters, in-flight handlers, queue backlogs, next schedule
runs and whether it holds a singleton lease. No external asset: styles and
script are in the page, and data only ever goes into ``textContent``.

>>> PAGE.startswith('<!DOCTYPE html>')
True
"""
from __future__ import annotations

__all__ = ['PAGE']

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="data:,">
<title>microagent status</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem;margin:0 0 .3rem}#summary{color:#555;margin-bottom:1rem}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{padding:.05rem .4rem;border-radius:.6rem;font-size:.8rem;background:#eee}
.running{background:#d8f5dd}.starting,.backoff,.stopping{background:#fff1c2}
.crashed,.killed{background:#ffd6d6}.bad{color:#b00020;font-weight:600}
#lost{display:none;background:#ffd6d6;padding:.4rem .6rem;margin-bottom:.8rem}
.muted{color:#777}ul{margin:0;padding-left:1rem}
</style></head><body>
<h1>microagent status</h1>
<div id="summary">loading&hellip;</div>
<div id="lost">The launcher does not answer; retrying&hellip;</div>
<table><thead><tr><th>agent</th><th>pid</th><th>state</th><th>restarts</th><th>handled</th><th>failed</th>
<th>retried</th><th>dead-lettered</th><th>in flight</th><th>queues (waiting)</th><th>next runs</th></tr></thead>
<tbody id="rows"></tbody></table>
<script>
"use strict";
const FIELDS = ["pid", "state", "restarts", "handled", "failed", "retried", "dead_lettered", "inflight"];

function cell(row, field, text, cls) {
  const td = document.createElement("td");
  td.dataset.field = field;
  if (cls) { td.className = cls; }
  if (text !== null) { td.textContent = text; }
  row.appendChild(td);
  return td;
}

function list(td, items) {
  if (!items.length) { td.textContent = "-"; return; }
  const ul = document.createElement("ul");
  for (const text of items) {
    const li = document.createElement("li");
    li.textContent = text;
    ul.appendChild(li);
  }
  td.appendChild(ul);
}

function when(iso) {
  if (!iso) { return "-"; }
  const at = new Date(iso);
  const secs = Math.round((at.getTime() - Date.now()) / 1000);
  const rel = secs <= 0 ? "now" : secs < 120 ? "in " + secs + "s" : "in " + Math.round(secs / 60) + "m";
  return at.toLocaleString() + " (" + rel + ")";
}

function schedule(s) {
  const name = String(s.handler).split(".").pop();
  const lease = s.singleton ? (s.holder ? ", holds the singleton lease" : ", singleton standby") : "";
  return name + ": " + when(s.next_run) + lease + ", " + s.runs + " run(s)";
}

function partitions(parts) {
  const names = Object.keys(parts || {});
  if (!names.length) return "";
  return " (" + names.map(p => p + ": " + parts[p]).join(", ") + ")";
}

function row(agent) {
  const tr = document.createElement("tr");
  tr.dataset.name = agent.name;
  cell(tr, "name", agent.name);
  cell(tr, "pid", agent.pid === null ? "-" : String(agent.pid), "num");
  const state = cell(tr, "state", null);
  const badge = document.createElement("span");
  badge.className = "state " + agent.state;
  badge.textContent = agent.state + (agent.ready ? "" : agent.state === "running" ? " (not ready)" : "");
  state.appendChild(badge);
  for (const field of FIELDS.slice(2)) {
    const bad = (field === "failed" || field === "dead_lettered" || field === "restarts") && agent[field] > 0;
    cell(tr, field, String(agent[field]), bad ? "num bad" : "num");
  }
  list(cell(tr, "queues", null), agent.queues.map(
    q => q.queue + ": " + (q.length === null ? "?" : q.length) + " waiting, " + q.inflight + " in flight" +
      partitions(q.partitions)));
  list(cell(tr, "schedules", null), agent.schedules.map(schedule));
  return tr;
}

function draw(data) {
  const body = document.getElementById("rows");
  body.replaceChildren(...data.agents.map(row));
  const up = data.agents.filter(a => a.pid !== null).length;
  document.getElementById("summary").textContent =
    (data.stopping ? "stopping" : data.ready ? "ready" : data.healthy ? "starting" : "not healthy") +
    " - " + up + "/" + data.agents.length + " agent replica(s) up - updated " +
    new Date(data.time).toLocaleTimeString();
}

async function poll() {
  try {
    const response = await fetch("status.json", {cache: "no-store"});
    if (!response.ok) { throw new Error("HTTP " + response.status); }
    draw(await response.json());
    document.getElementById("lost").style.display = "none";
  } catch (error) {
    document.getElementById("lost").style.display = "block";
  }
  setTimeout(poll, 1000);
}
poll();
</script></body></html>
"""
