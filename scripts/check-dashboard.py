#!/usr/bin/env python3
"""Checks a Grafana dashboard's PromQL against a live Prometheus.

    check-dashboard.py DASHBOARD_JSON PROMETHEUS_URL START_UNIX BREAKER

Every query of every panel (`targets[].expr`) must return data over the run (a range query
from START_UNIX to now, one point a second), and the breaker-state panel's query
(`breaker_state`) must show BREAKER at 2 (open) at least once. Exits 1 naming what failed.
Run by scripts/steps/h14-watch.sh after a loaded stack with an injected fault was scraped.
"""

import json
import sys
import time
import urllib.parse
import urllib.request


def query_range(prom, expr, start, end):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{params}", timeout=10) as res:
        body = json.load(res)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)  # rows hold panels of their own


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    path, prom, start, breaker = sys.argv[1], sys.argv[2].rstrip("/"), float(sys.argv[3]), sys.argv[4]
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    end = time.time()
    failures, checked, state_seen = [], 0, False
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            checked += 1
            series = query_range(prom, expr, start, end)
            points = sum(len(s["values"]) for s in series)
            labels = sorted({"/".join(s["metric"].values()) for s in series})
            print(f"  {panel['title']} [{target.get('refId')}]: {len(series)} series, {points} points "
                  f"({', '.join(labels)[:150]})")
            if points == 0:
                failures.append(f"no data: {panel['title']}: {expr}")
            if "breaker_state" in expr:
                state_seen = True
                values = [float(v) for s in series if s["metric"].get("breaker") == breaker
                          for _, v in s["values"]]
                if 2.0 not in values:
                    failures.append(f"{panel['title']}: {breaker} never 2 (open); saw {sorted(set(values))}")
                else:
                    print(f"  {breaker} open in {values.count(2.0)} of {len(values)} points")
    if checked == 0:
        failures.append("the dashboard has no queries")
    if not state_seen:
        failures.append("no panel queries breaker_state")
    for f in failures:
        print(f"FAIL {f}")
    print(f"{checked} queries checked, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
