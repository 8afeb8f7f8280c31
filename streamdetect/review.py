"""The analysts' review page, served by the worker's web server at ``/review``.

The page polls ``/review/alerts.json`` (the worker's latest alerts, newest first, each with its
label if it has one) and shows the queue: feed, key, event time, score, p-value and the top
features with the values the model expected. "Confirmed" and "False alarm" post to
``/review/label``, which the worker publishes to the ``feedback`` topic; its own feedback agent
then stores the label in the ``labels`` table, so the page shows what the topic holds.

The queue is this worker's: with several workers in a group, each page shows the alerts of the
partitions its worker scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson


def queue(recent: Iterable[bytes], labels: Mapping) -> dict:
    """``{"alerts": [alert + {"label": ...}], "labelled": n}``, newest first."""
    alerts = []
    for raw in reversed(list(recent)):
        alert = orjson.loads(raw)
        label = labels.get(alert["event_id"])
        alerts.append({**alert, "label": label["label"] if label else None})
    return {"alerts": alerts, "labelled": sum(1 for a in alerts if a["label"])}


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>streamdetect: alert review</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.3em; margin: 0 0 .3em; }
 #status { color: #666; margin-bottom: 1em; }
 table { border-collapse: collapse; width: 100%; }
 th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
 th { background: #f4f4f4; }
 td.num { font-variant-numeric: tabular-nums; text-align: right; }
 .features { font-size: .9em; color: #444; }
 .features span { display: block; }
 tr.confirmed { background: #fde8e8; }
 tr.false_alarm { background: #e8f4e8; }
 button { margin-right: .3em; cursor: pointer; }
</style>
</head>
<body>
<h1>Alert review</h1>
<div id="status">loading...</div>
<label>Analyst <input id="analyst" value="analyst" size="12"></label>
<table>
 <thead><tr><th>time</th><th>feed</th><th>key</th><th>event</th><th>score</th><th>p-value</th>
  <th>top features: value (expected)</th><th>label</th></tr></thead>
 <tbody id="queue"></tbody>
</table>
<script>
let lastAction = "";
const fmt = (x, d) => (typeof x === "number" ? x.toPrecision(d) : String(x));
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
async function label(eventId, verdict, button) {
  button.disabled = true;
  const analyst = document.getElementById("analyst").value || "analyst";
  const response = await fetch("/review/label", {method: "POST", headers: {"Content-Type": "application/json"},
                                 body: JSON.stringify({event_id: eventId, label: verdict, analyst})});
  const body = await response.json();
  lastAction = response.ok ? `sent ${verdict} for ${eventId}` : `refused: ${body.error}`;
  if (!response.ok) button.disabled = false;
  refresh();
}
function row(alert) {
  const tr = document.createElement("tr");
  tr.dataset.eventId = alert.event_id;
  if (alert.label) tr.className = alert.label;
  tr.append(cell(alert.event_time), cell(alert.feed), cell(alert.key || "-"), cell(alert.event_id),
            cell(fmt(alert.score, 4), "num"), cell(fmt(alert.p_value, 3), "num"));
  const features = cell("", "features");
  for (const f of alert.top_features) {
    const span = document.createElement("span");
    span.textContent = `${f.name}: ${fmt(f.value, 4)} (${fmt(f.expected, 4)})`;
    features.append(span);
  }
  tr.append(features);
  const verdict = document.createElement("td");
  verdict.className = "verdict";
  if (alert.label) {
    verdict.textContent = alert.label === "confirmed" ? "confirmed" : "false alarm";
  } else {
    for (const [value, text] of [["confirmed", "Confirmed"], ["false_alarm", "False alarm"]]) {
      const button = document.createElement("button");
      button.textContent = text;
      button.className = value;
      button.onclick = () => label(alert.event_id, value, button);
      verdict.append(button);
    }
  }
  tr.append(verdict);
  return tr;
}
async function refresh() {
  try {
    const response = await fetch("/review/alerts.json");
    const data = await response.json();
    document.getElementById("queue").replaceChildren(...data.alerts.map(row));
    const status = document.getElementById("status");
    status.dataset.count = data.alerts.length;
    status.textContent = `${data.alerts.length} alerts, ${data.labelled} labelled` + (lastAction ? ` (${lastAction})` : "");
  } catch (err) {
    document.getElementById("status").textContent = `worker unreachable: ${err}`;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
