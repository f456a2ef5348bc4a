#!/usr/bin/env python3
"""Asserts what the two Chaos Toolkit journals must say (CI step `chaos`).

    experiments/verdicts.py target/chaos/journal-before.json target/chaos/journal-after.json

before (breakers and fallback off): the experiment completed and the steady state deviated,
because order stopped answering 200; the orders sent during the outage got 5xx.
after (defaults): it completed without deviation; every order during the outage got 200 and
payment's breaker was open.
Both: shipment was really down (its /health refused connections after the kill) and the
rollback started it again. Prints one line per journal; exits 1 on the first broken claim.
"""

import json
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def activity(journal, name, section="run"):
    for run in journal[section]:
        if run["activity"]["name"] == name:
            return run
    raise AssertionError(f"no activity {name!r} in the journal's {section}")


def check_common(mode, j):
    assert j["status"] == "completed", f"{mode}: status {j['status']!r}, expected 'completed'"
    assert j["steady_states"]["before"]["steady_state_met"], f"{mode}: not steady before the kill"
    down = activity(j, "shipment-refuses-connections")
    assert down["status"] == "failed", f"{mode}: shipment still answered after the kill"
    rollback = activity(j, "start-shipment-again", "rollbacks")
    assert rollback["status"] == "succeeded", f"{mode}: the rollback did not start shipment"


def codes(j):
    return activity(j, "orders-during-the-outage")["output"]["stdout"].split()


def breaker_state(j):
    return activity(j, "payment-breaker-after-the-orders")["output"]["body"]["breaker"]["state"]


def main(before_path, after_path):
    before, after = load(before_path), load(after_path)

    check_common("before", before)
    assert before["deviated"] is True, "before: the hypothesis held without breakers and fallback"
    failed = [p["activity"]["name"] for p in before["steady_states"]["after"]["probes"]
              if not p["tolerance_met"]]
    assert "order-answers-200-within-its-sla" in failed, f"before: deviated on {failed}, not on order"
    assert all(c.startswith("5") for c in codes(before)), f"before: orders got {codes(before)}"
    print(f"before: status={before['status']} deviated=true (failed: {', '.join(failed)}); "
          f"orders during the outage: {' '.join(codes(before))}; breaker {breaker_state(before)}")

    check_common("after", after)
    assert after["deviated"] is False, "after: the hypothesis deviated with the defaults"
    assert all(c == "200" for c in codes(after)), f"after: orders got {codes(after)}"
    assert breaker_state(after) == "open", f"after: payment's breaker is {breaker_state(after)}"
    print(f"after: status={after['status']} deviated=false; "
          f"orders during the outage: {' '.join(codes(after))}; breaker {breaker_state(after)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main(sys.argv[1], sys.argv[2])
    except AssertionError as e:
        print(f"chaos verdicts: {e}", file=sys.stderr)
        sys.exit(1)
