"""A run's report as one self-contained HTML page (``trailgeo replay --report``, ``make eval``).

What a person looks at after a replay: the run's figures and alerts by severity, a timeline of the
alerts coloured by severity (inline SVG), the alerts most urgent first (each row opens onto its
explanation), each alerted principal's countries as the detector's history holds them (hours
observed, first and last seen; the alerted country marked), the countries per principal over the
whole history, and the run's skips by reason.

Self-contained: inline CSS, inline SVG and one small inline script (sorting, filtering), no font,
image, stylesheet or script fetched; the page's Content-Security-Policy allows nothing else to
load or run (``default-src 'none'``, the style and the script by their hashes). The only URLs are
the console links, as plain anchors.

Every string of an alert may be an attacker's (session names, user agents, role names, method
names from forged records): each one goes through :func:`_text` (``core.text.plain``, then
``html.escape``) before it is written, in text and in attributes alike. Sizes are bounded so the
page opens with any number of alerts: :data:`MAX_ALERT_ROWS` rows, :data:`MAX_PRINCIPALS`
principals' histories, :data:`TOP_PRINCIPALS` principals by countries, each list cut with how many
it left out.

Pure: a function of :class:`ReportData`; imports ``trailgeo.core`` and the standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from trailgeo.core.alerts import SEVERITY_LEVELS, Alert, location_label
from trailgeo.core.identities import identity_of, role_of
from trailgeo.core.incidents import severity_rank
from trailgeo.core.render.shared import (
    console_links,
    evidence_words,
    incident_member_lines,
    incident_text,
    network_words,
    rare_items,
)
from trailgeo.core.text import plain, visible

MAX_ALERT_ROWS = 500  # rows of the alerts table; the timeline and the counts take every alert
MAX_PRINCIPALS = 100  # alerted principals whose country history is shown
MAX_COUNTRIES = 20  # countries per history shown
TOP_PRINCIPALS = 50  # principals listed by their number of countries
MAX_SKIP_ROWS = 100
TIMELINE_BINS = 60
FIELD_CHARS = 300  # one table cell's text
EXPLANATION_CHARS = 3000
LIST_ITEMS = 10  # addresses, user agents, methods, incident members in an alert's details
SEVERITY_COLOURS = {"low": "#74a9cf", "medium": "#fdae61", "high": "#e6550d", "critical": "#99000d"}
BY_COUNTRIES_BUCKETS = 10  # principals with 1, 2, ... 9 and "10+" countries


@dataclass(frozen=True, slots=True)
class CountryHistory:
    """One country of a principal's history (a ``P#<identity>`` counter ``C#<country>``)."""

    country: str
    hours: int  # hourly buckets observed (presence, as the detector counts it)
    first_seen: str | None
    last_seen: str | None


@dataclass(frozen=True, slots=True)
class RunFigures:
    window_start: datetime | None = None
    window_end: datetime | None = None
    ticks: int = 0
    files: int = 0
    events: int = 0
    events_geolocated: int = 0
    alerts_suppressed: int = 0
    alerts_rolled_up: int = 0
    alerts_linked: int = 0


@dataclass(frozen=True, slots=True)
class ReportData:
    """What a report shows: the run's figures, its alerts (every one: the page bounds what it
    lists), its skips (kind, e.g. ``files``, to reason to count) and the principals' country
    histories after the run, keyed by identity (``core.identities.identity_of``; roles too)."""

    run: RunFigures
    alerts: Sequence[Alert]
    skips: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    histories: Mapping[str, Sequence[CountryHistory]] = field(default_factory=dict)
    title: str = "trailgeo replay"
    generated_at: datetime | None = None


# ---------------------------------------------------------------------------- the fixed parts

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:22px}
header p{margin:2px 0;color:#c9ced8}
main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dfe3ea;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px;word-break:break-all}
.figures{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}
.figure{background:#2b3344;border-radius:5px;padding:6px 12px;min-width:90px}
.figure b{display:block;font-size:20px;color:#fff}
.figure span{font-size:12px;color:#c9ced8}
.fig-low{border-left:5px solid #74a9cf}.fig-medium{border-left:5px solid #fdae61}
.fig-high{border-left:5px solid #e6550d}.fig-critical{border-left:5px solid #d7301f}
.sev{display:inline-block;padding:1px 7px;border-radius:9px;color:#fff;font-size:12px;font-weight:600}
.sev-low{background:#74a9cf}.sev-medium{background:#e08a1e}.sev-high{background:#e6550d}.sev-critical{background:#99000d}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff4;vertical-align:top}
th{background:#f0f2f6;font-weight:600;white-space:nowrap}
#alerts th{cursor:pointer}
#alerts th[aria-sort=ascending]::after{content:" \\25B2"}
#alerts th[aria-sort=descending]::after{content:" \\25BC"}
td.wrap{word-break:break-all;max-width:340px}
tr.alerted td{background:#fde0dd;font-weight:600}
details summary{cursor:pointer;color:#2456a6}
.expl{white-space:pre-wrap;background:#f6f7f9;border-radius:4px;padding:8px;margin:6px 0;max-width:900px;
word-break:break-word}
.note{color:#5b6475;font-size:13px}
.legend span{margin-right:12px}
input#filter{padding:5px 8px;width:320px;margin-bottom:8px;border:1px solid #c5cbd6;border-radius:4px}
ul.compact{margin:4px 0;padding-left:18px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
.card{border:1px solid #eceff4;border-radius:5px;padding:8px 10px}
.scroll{overflow-x:auto}
"""

SCRIPT = """
(function () {
  var table = document.getElementById('alerts');
  if (table) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var heads = table.tHead.rows[0].cells;
    var filter = document.getElementById('filter');
    filter.addEventListener('input', function () {
      var query = filter.value.toLowerCase();
      rows.forEach(function (row) {
        row.hidden = query !== '' && row.textContent.toLowerCase().indexOf(query) < 0;
      });
    });
    var key = function (row, i) {
      var cell = row.cells[i];
      return cell.hasAttribute('data-v') ? cell.getAttribute('data-v') : cell.textContent;
    };
    Array.prototype.forEach.call(heads, function (head, i) {
      head.addEventListener('click', function () {
        var ascending = head.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (other) { other.removeAttribute('aria-sort'); });
        head.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        rows.sort(function (a, b) {
          var x = key(a, i), y = key(b, i), nx = parseFloat(x), ny = parseFloat(y);
          var order = !isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y);
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }
  document.documentElement.setAttribute('data-ready', '1');
})();
"""


def _sha256(source: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii")


# Nothing loads from anywhere, and only this style and this script apply: were an attacker's text
# ever written unescaped, its script would not run and its markup could fetch nothing.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{_sha256(STYLE)}'; script-src '{_sha256(SCRIPT)}'; "
    "base-uri 'none'; form-action 'none'"
)


# ---------------------------------------------------------------------------- escaping


def _text(value: object, limit: int = FIELD_CHARS) -> str:
    """Attacker-controlled text as HTML text or a quoted attribute value: controls and invisible
    characters made visible (``core.text.plain``), cut to ``limit``, then every ``<``, ``>``,
    ``&``, ``"`` and ``'`` escaped."""
    return html.escape(plain(str(value), limit), quote=True)


def _multiline(value: str, limit: int) -> str:
    """Like :func:`_text`, keeping the line breaks (for a ``pre-wrap`` block)."""
    cut = value if len(value) <= limit else value[:limit] + "… [cut]"
    lines = cut.replace("\r", "").split("\n")
    return "\n".join(html.escape(visible(line), quote=True) for line in lines)


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _n(value: int) -> str:
    return f"{value:,}"


def _more(left_out: int, what: str) -> str:
    return f'<p class="note">and {_n(left_out)} more {what} not shown</p>' if left_out > 0 else ""


# ---------------------------------------------------------------------------- the page


def render_html_report(data: ReportData) -> str:
    """The report: one HTML document, everything inline."""
    alerts = sorted(data.alerts, key=_urgency)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_text(data.title)}: {_n(len(alerts))} alerts</title>",
        f"<style>{STYLE}</style></head><body>",
        _header(data, alerts),
        "<main>",
        _timeline(data, alerts),
        _alert_table(alerts),
        _alerted_histories(alerts, data.histories),
        _countries_per_principal(data.histories),
        _skips(data.skips),
        "</main>",
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _urgency(alert: Alert) -> tuple[int, bool, float, float, str]:
    """Most urgent first: severity, then a sensitive method, score, the latest, the id."""
    return (
        -severity_rank(alert.severity),
        not alert.sensitive_methods,
        -alert.score,
        -alert.detected_at.timestamp(),
        alert.alert_id,
    )


def _by_severity(alerts: Iterable[Alert]) -> Counter[str]:
    return Counter(alert.severity for alert in alerts)


def _header(data: ReportData, alerts: Sequence[Alert]) -> str:
    run = data.run
    counts = _by_severity(alerts)
    figures = [
        (_n(len(alerts)), "alerts"),
        *((_n(counts[s]), s) for s in reversed(SEVERITY_LEVELS)),
        (_n(run.files), "files"),
        (_n(run.events), "events"),
        (_n(run.events_geolocated), "events geolocated"),
        (_n(run.ticks), "ticks"),
        (_n(run.alerts_suppressed), "alerts suppressed"),
        (_n(run.alerts_linked), "linked into incidents"),
        (_n(run.alerts_rolled_up), "rolled up"),
    ]
    boxes = "".join(  # a severity's figure in its colour
        f'<div class="figure{f" fig-{label}" if label in SEVERITY_COLOURS else ""}"><b>{value}</b>'
        f"<span>{label}</span></div>"
        for value, label in figures
    )
    window = (
        f"Window: {_time(run.window_start)} to {_time(run.window_end)}"
        if run.window_start or run.window_end
        else "Window: not recorded"
    )
    generated = f"; report written {_time(data.generated_at)}" if data.generated_at else ""
    return (
        f"<header><h1>{_text(data.title)}</h1>"
        f"<p>{window}{generated}</p>"
        f'<div class="figures">{boxes}</div></header>'
    )


def _severity_badge(severity: str) -> str:
    return f'<span class="sev sev-{_text(severity)}">{_text(severity)}</span>'


def _legend() -> str:
    return (
        '<p class="legend">'
        + "".join(
            f'<span><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
            f'fill="{SEVERITY_COLOURS[s]}"/></svg> {s}</span>'
            for s in SEVERITY_LEVELS
        )
        + "</p>"
    )


def _timeline(data: ReportData, alerts: Sequence[Alert]) -> str:
    """Alerts per time bin, stacked by severity: one bar per bin, whatever the number of alerts."""
    head = "<section><h2>Timeline: alerts by detection time and severity</h2>"
    if not alerts:
        return head + '<p class="note">No alerts in this run.</p></section>'
    times = [a.detected_at for a in alerts]
    start = min([*times, *([data.run.window_start] if data.run.window_start else [])])
    end = max([*times, *([data.run.window_end] if data.run.window_end else [])])
    span = max(end - start, timedelta(hours=1))
    bins: list[Counter[str]] = [Counter() for _ in range(TIMELINE_BINS)]
    for alert in alerts:
        index = min(TIMELINE_BINS - 1, int((alert.detected_at - start) / span * TIMELINE_BINS))
        bins[index][alert.severity] += 1
    width, height, left, bottom, top = 960, 190, 44, 28, 10
    plot_h = height - bottom - top
    bar_w = (width - left - 10) / TIMELINE_BINS
    peak = max(sum(b.values()) for b in bins)
    shapes: list[str] = []
    for i, counts in enumerate(bins):
        y = float(height - bottom)
        x = left + i * bar_w
        bin_start = start + span * i / TIMELINE_BINS
        for severity in SEVERITY_LEVELS:
            count = counts[severity]
            if not count:
                continue
            h = count / peak * plot_h
            y -= h
            shapes.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{SEVERITY_COLOURS[severity]}"><title>{_time(bin_start)}: {_n(count)} {severity}'
                "</title></rect>"
            )
    axis = (
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'stroke="#8a93a5"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#8a93a5"/>'
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">{_n(peak)}</text>'
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" font-size="11">0</text>'
        f'<text x="{left}" y="{height - 8}" font-size="11">{_time(start)}</text>'
        f'<text x="{width - 10}" y="{height - 8}" text-anchor="end" font-size="11">'
        f"{_time(start + span)}</text>"
    )
    bin_words = _duration(span / TIMELINE_BINS)
    return (
        head + f'<svg id="timeline" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="alerts over time by severity">{axis}{"".join(shapes)}</svg>'
        + _legend()
        + f'<p class="note">Each bar: the alerts detected in {bin_words}; hover for the counts.</p></section>'
    )


def _duration(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    if minutes < 120:  # two hours: below, minutes read better
        return f"{minutes:.0f} minutes"
    return f"{minutes / 60:.1f} hours"


def _alert_table(alerts: Sequence[Alert]) -> str:
    shown = alerts[:MAX_ALERT_ROWS]
    rows = "\n".join(_alert_row(alert) for alert in shown)
    heads = "".join(
        f"<th>{name}</th>"
        for name in (
            "detected",
            "severity",
            "score",
            "principal",
            "account",
            "location",
            "methods",
            "evidence",
            "incident",
            "details",
        )
    )
    left_out = len(alerts) - len(shown)
    cut = (
        f'<p class="note"><b>{_n(len(shown))} of {_n(len(alerts))} alerts listed</b> (the most urgent '
        f"first); {_n(left_out)} more are counted in the figures and the timeline, not listed.</p>"
        if left_out
        else ""
    )
    return (
        f"<section><h2>Alerts ({_n(len(alerts))})</h2>"
        '<p class="note">Most urgent first (severity, a sensitive method, score). Click a column to sort; '
        "open a row's details for its explanation.</p>"
        f"{cut}"
        '<input id="filter" type="search" placeholder="filter: principal, country, method..." '
        'aria-label="filter the alerts">'
        f'<div class="scroll"><table id="alerts"><thead><tr>{heads}</tr></thead><tbody>\n{rows}\n</tbody>'
        "</table></div></section>"
    )


def _alert_row(alert: Alert) -> str:
    methods = [m.method for m in alert.methods] or [f.value for f in alert.findings]
    more_methods = len(methods) - 3 + alert.omitted.methods
    method_cell = "<br>".join(_text(m, 120) for m in methods[:3]) + (
        f"<br><i>and {_n(more_methods)} more</i>" if more_methods > 0 else ""
    )
    evidence = "<br>".join(_text(e.factor, 60) for e in alert.evidence) or "-"
    incident = _text(alert.incident.id, 64) if alert.incident is not None else "-"
    iso = alert.detected_at.astimezone(UTC).isoformat()
    return (
        f'<tr data-alert-id="{_text(alert.alert_id, 64)}">'
        f'<td data-v="{_text(iso)}">{_time(alert.detected_at)}</td>'
        f'<td data-v="{severity_rank(alert.severity)}">{_severity_badge(alert.severity)}</td>'
        f'<td data-v="{alert.score:.1f}">{alert.score:.1f}</td>'
        f'<td class="wrap">{_text(alert.principal)}</td>'
        f"<td>{_text(alert.cloud.account.id, 20)}</td>"
        f"<td>{_text(location_label(alert.location), 80)}</td>"
        f'<td class="wrap">{method_cell}</td>'
        f"<td>{evidence}</td>"
        f'<td class="wrap">{incident}</td>'
        f"<td>{_details(alert)}</td></tr>"
    )


def _items(title: str, values: Sequence[str], left_out: int = 0, limit: int = LIST_ITEMS) -> str:
    if not values:
        return ""
    shown = "".join(f"<li>{_text(v)}</li>" for v in values[:limit])
    more = left_out + max(0, len(values) - limit)
    tail = f"<li><i>and {_n(more)} more</i></li>" if more else ""
    return f'<b>{title}</b><ul class="compact">{shown}{tail}</ul>'


def _details(alert: Alert) -> str:
    rare = [
        f"{item.value}: score {item.score:g}, {item.events} events"
        + (", sensitive" if item.sensitive else "")
        + (f"; usual countries {item.usual}" if item.usual else "")
        for item in rare_items(alert)
    ]
    incident = incident_text(alert)
    incident_lines = [incident, *incident_member_lines(alert, LIST_ITEMS)] if incident else []
    rolled = [
        f"{r.severity} {r.principal} from {location_label(r.location)} (score {r.score:g})"
        for r in alert.rolled_up
    ]
    networks = network_words(alert)
    links = "".join(
        f'<li><a href="{html.escape(url, quote=True)}" rel="noopener noreferrer" target="_blank">'
        f"{_text(name.replace('_', ' '))} in the AWS console</a></li>"
        for name, url in console_links(alert).items()
    )
    return (
        f"<details><summary>explanation</summary>"
        f'<div class="expl">{_multiline(alert.explanation, EXPLANATION_CHARS)}</div>'
        f"<p><b>alert id</b> {_text(alert.alert_id, 64)}"
        f"<br><b>events</b> {_text(alert.first_event_time, 40)} to {_text(alert.last_event_time, 40)}</p>"
        + _items("rare methods or findings", rare)
        + _items("source addresses", alert.source.ip, alert.omitted.source_ip)
        + _items("user agents", alert.user_agent.original, alert.omitted.user_agent)
        + _items("access keys", alert.access_key_ids, alert.omitted.access_key_ids)
        + _items("evidence", evidence_words(alert))
        + (f"<p><b>networks</b> {_text(networks, 600)}</p>" if networks else "")
        + _items("incident", incident_lines, limit=LIST_ITEMS + 2)
        + _items("rolled up into this alert", rolled)
        + (f'<b>investigate</b><ul class="compact">{links}</ul>' if links else "")
        + "</details>"
    )


# ---------------------------------------------------------------------------- histories


def _hours_bar(hours: int, peak: int) -> str:
    width = 0 if peak <= 0 else max(1.0, 120 * hours / peak)
    return (
        f'<svg width="124" height="12" aria-hidden="true"><rect width="{width:.1f}" height="10" '
        'fill="#5b7fbf"/></svg>'
    )


def _history_row(h: CountryHistory, peak: int, alerted: bool) -> str:
    return (
        ('<tr class="alerted">' if alerted else "<tr>")
        + f"<td>{_text(location_label(h.country), 80)}{' (alerted)' if alerted else ''}</td>"
        f'<td data-v="{h.hours}">{_n(h.hours)}</td><td>{_hours_bar(h.hours, peak)}</td>'
        f"<td>{_text(h.first_seen or '-', 40)}</td><td>{_text(h.last_seen or '-', 40)}</td></tr>"
    )


def _history_table(history: Sequence[CountryHistory], alerted: set[str]) -> str:
    ordered = sorted(history, key=lambda h: (h.country not in alerted, -h.hours, h.country))
    shown = ordered[:MAX_COUNTRIES]
    peak = max((h.hours for h in history), default=0)
    rows = "".join(_history_row(h, peak, h.country in alerted) for h in shown)
    return (
        "<table><thead><tr><th>country</th><th>hours observed</th><th></th><th>first seen</th>"
        f"<th>last seen</th></tr></thead><tbody>{rows}</tbody></table>"
        + _more(len(ordered) - len(shown), "countries")
    )


def _alerted_histories(alerts: Sequence[Alert], histories: Mapping[str, Sequence[CountryHistory]]) -> str:
    """Each alerted principal's countries (most urgent principal first), its role's too."""
    alerted: dict[str, tuple[str, set[str]]] = {}  # identity -> (a principal ARN, alerted locations)
    for alert in alerts:  # already most urgent first
        identity = identity_of(alert.principal)
        entry = alerted.setdefault(identity, (alert.principal, set()))
        entry[1].add(alert.location)
    names = list(alerted)
    cards = []
    for identity in names[:MAX_PRINCIPALS]:
        principal, locations = alerted[identity]
        history = histories.get(identity, ())
        body = (
            _history_table(history, locations)
            if history
            else '<p class="note">No history kept for this principal.</p>'
        )
        role = role_of(principal)
        role_history = histories.get(role, ()) if role else ()
        role_part = (
            f'<p class="note">Its role, {_text(role)}, over all its sessions:</p>'
            + _history_table(role_history, locations)
            if role and role_history
            else ""
        )
        alerted_words = ", ".join(_text(location_label(loc), 80) for loc in sorted(locations))
        cards.append(
            f'<div class="card"><h3>{_text(identity)}</h3>'
            f'<p class="note">alerted from {alerted_words}</p>{body}{role_part}</div>'
        )
    if not cards:
        return ""
    return (
        "<section><h2>Alerted principals: their countries</h2>"
        '<p class="note">The detector\'s history after the run: hours in which each country was '
        "observed (hourly presence), first and last seen. The alerted country is marked.</p>"
        f'<div class="grid">{"".join(cards)}</div>'
        + _more(len(names) - MAX_PRINCIPALS, "alerted principals")
        + "</section>"
    )


def _countries_per_principal(histories: Mapping[str, Sequence[CountryHistory]]) -> str:
    if not histories:
        return ""
    spread = Counter(min(len(h), BY_COUNTRIES_BUCKETS) for h in histories.values())
    peak = max(spread.values())
    width, height, left, bottom = 520, 150, 40, 24
    bar_w = (width - left - 10) / BY_COUNTRIES_BUCKETS
    bars = []
    for n in range(1, BY_COUNTRIES_BUCKETS + 1):
        count = spread.get(n, 0)
        h = count / peak * (height - bottom - 16)
        x = left + (n - 1) * bar_w
        label = f"{n}+" if n == BY_COUNTRIES_BUCKETS else str(n)
        bars.append(
            f'<rect x="{x + 3:.1f}" y="{height - bottom - h:.1f}" width="{bar_w - 6:.1f}" height="{h:.1f}" '
            f'fill="#5b7fbf"><title>{_n(count)} with {label} {"country" if n == 1 else "countries"}'
            "</title></rect>"
            f'<text x="{x + bar_w / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="11">'
            f"{label}</text>"
            + (
                f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom - h - 3:.1f}" text-anchor="middle" '
                f'font-size="10">{_n(count)}</text>'
                if count
                else ""
            )
        )
    chart = (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" role="img" '
        f'aria-label="principals by number of countries">{"".join(bars)}</svg>'
    )
    ranked = sorted(
        histories.items(), key=lambda item: (-len(item[1]), -sum(h.hours for h in item[1]), item[0])
    )
    rows = "".join(
        f'<tr><td class="wrap">{_text(identity)}</td><td>{len(history)}</td><td>'
        + ", ".join(
            f"{_text(h.country, 40)} {_n(h.hours)}h"
            for h in sorted(history, key=lambda h: (-h.hours, h.country))[:MAX_COUNTRIES]
        )
        + (f", and {_n(len(history) - MAX_COUNTRIES)} more" if len(history) > MAX_COUNTRIES else "")
        + "</td></tr>"
        for identity, history in ranked[:TOP_PRINCIPALS]
    )
    return (
        f"<section><h2>Countries per principal ({_n(len(histories))} histories)</h2>"
        "<p class=\"note\">Every principal's and role's history: how many have calls from 1, 2, ... "
        "countries, then those with the most (hours observed per country).</p>"
        f"{chart}<table><thead><tr><th>principal or role</th><th>countries</th>"
        f"<th>hours observed per country</th></tr></thead><tbody>{rows}</tbody></table>"
        + _more(len(ranked) - TOP_PRINCIPALS, "principals")
        + "</section>"
    )


def _skips(skips: Mapping[str, Mapping[str, int]]) -> str:
    rows = sorted(
        (
            (kind, reason, count)
            for kind, reasons in skips.items()
            for reason, count in reasons.items()
            if count
        ),
        key=lambda row: (-row[2], row[0], row[1]),
    )
    head = "<section><h2>Skipped</h2>"
    if not rows:
        return head + '<p class="note">Nothing skipped: every key, file and record was read.</p></section>'
    totals = Counter[str]()
    for kind, _, count in rows:
        totals[kind] += count
    summary = ", ".join(f"{_n(count)} {_text(kind, 40)}" for kind, count in sorted(totals.items()))
    body = "".join(
        f"<tr><td>{_text(kind, 40)}</td><td>{_text(reason, 80)}</td><td>{_n(count)}</td></tr>"
        for kind, reason, count in rows[:MAX_SKIP_ROWS]
    )
    return (
        head + f'<p class="note">{summary} skipped, by reason (docs/architecture.md, step 2 and 3).</p>'
        "<table><thead><tr><th>what</th><th>reason</th><th>count</th></tr></thead>"
        f"<tbody>{body}</tbody></table>" + _more(len(rows) - MAX_SKIP_ROWS, "reasons") + "</section>"
    )
