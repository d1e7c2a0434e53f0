"""`python -m scaler status [--watch]`: the scaler's status on one terminal screen.

What `./manage.sh status` and `./manage.sh watch` show; it reads the same
/api/status the dashboard reads, so the two never disagree.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

import httpx


def render(document: dict[str, Any]) -> str:
    lines = []
    broker = (
        "reachable"
        if document.get("broker", {}).get("reachable")
        else f"UNREACHABLE ({document['broker'].get('error')})"
    )
    tick = document.get("tick", {})
    lines.append(
        f"backend {document.get('backend')}  broker {broker}  tick {tick.get('interval')} s "
        f"({tick.get('last_duration_ms')} ms)  {'leader' if document.get('leader') else 'standby'}"
    )
    if document.get("config", {}).get("error"):
        lines.append(f"CONFIG ERROR (last good config in force): {document['config']['error']}")
    budget = document.get("budget") or {}
    if budget.get("max_workers") is not None or budget.get("resources"):
        limits = [f"workers {budget['used']}/{budget['max_workers']}"] if budget.get("max_workers") is not None else []
        limits += [f"{name} {item['used']:g}/{item['total']:g}" for name, item in budget.get("resources", {}).items()]
        held = ", ".join(f"{name} {count}" for name, count in budget.get("by_type", {}).items()) or "nothing"
        lines.append(f"BUDGET {'  '.join(limits)}  (held by {held})")
    lines.append("")
    lines.append(
        f"{'JOB TYPE':<20} {'READY':>7} {'UNACKED':>7} {'DEAD':>5} {'WORKERS':>9} {'WANT':>5}  {'STATE':<18} REASON"
    )
    for name, item in document.get("job_types", {}).items():
        workers = f"{item['workers']}/{item['max_workers']}"
        first, *rest = str(item["reason"]).splitlines() or [""]
        lines.append(
            f"{name[:20]:<20} {_n(item['ready']):>7} {_n(item['unacked']):>7} {_n(item['dead']):>5} {workers:>9} "
            f"{_n(item.get('desired')):>5}  {item['state']:<18} {first}"
        )
        lines.extend(f"{'':>22}| {line}" for line in rest)
    workers = document.get("workers", [])
    if workers:
        lines.append("")
        lines.append(f"{'WORKER':<34} {'TYPE':<14} {'STATE':<10} {'DONE':>6} {'FAILED':>6}  STARTED")
        for worker in workers[:15]:
            started = datetime.fromtimestamp(worker["started_at"]).strftime("%H:%M:%S")
            lines.append(
                f"{worker['id'][:34]:<34} {worker['job_type'][:14]:<14} {worker['state']:<10} "
                f"{worker['processed']:>6} {worker['failed']:>6}  {started}"
            )
    events = document.get("events", [])
    if events:
        lines.append("")
        lines.append("RECENT EVENTS")
        for event in events[:6]:
            lines.append(
                f"  {datetime.fromtimestamp(event['ts']).strftime('%H:%M:%S')} {event['job_type']}: {event['reason']}"
            )
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def main(url: str, watch: bool, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while True:
        try:
            response = httpx.get(f"{url.rstrip('/')}/api/status", timeout=5, headers=headers)
            response.raise_for_status()
            screen = render(response.json())
        except httpx.HTTPError as error:
            screen = f"scaler at {url} is not answering: {error}\n(start it with ./manage.sh up)"
            if not watch:
                print(screen, file=sys.stderr)
                return 1
        if watch:
            sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S  ") + "(Ctrl-C to quit)\n" + screen + "\n")
            sys.stdout.flush()
            try:
                time.sleep(1)
            except KeyboardInterrupt:
                return 0
        else:
            print(screen)
            return 0
