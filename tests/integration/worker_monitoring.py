"""monitoring:suppress and monitoring:enable against a real Prometheus Alertmanager (Debian's
prometheus-alertmanager) the test starts on loopback: the silence is listed by the API during
the job, silences a real alert of the host, ends at the job's deadline, is not made twice by a
rerun or a run killed midway, and monitoring:enable expires exactly that one."""
import datetime
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import check, wait_for  # noqa: E402
from worker_support import Alertmanager, dump, free_port, killed_midway, run_worker, worker_env  # noqa: E402

am = Alertmanager()
ok = False
state = tempfile.mkdtemp(prefix="jarvis-mon-state-")
try:
    design = dump({"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "linode",
                                "ip": "127.0.0.5"},
                   "monitoring": {"alertmanager": am.url, "silence_for": "30m"}})
    env = worker_env(state, "monitoring:suppress", job="5")

    def active(job="5"):
        return [s for s in am.get("/api/v2/silences")
                if s["status"]["state"] == "active" and s["createdBy"] == f"jarvis job {job}"]

    # An alert of the host, and one of another host that must stay loud.
    alerts = [{"labels": {"alertname": "NodeDown", "instance": "loki.example.com:9100"}},
              {"labels": {"alertname": "NodeDown", "instance": "thor.example.com:9100"}}]
    am.post("/api/v2/alerts", alerts)

    r = run_worker("monitoring:suppress", design, env, expect=0)
    cb = r.clipboard(design)
    sid = cb["monitoring"]["silence_id"]
    [s] = active()
    check(s["id"] == sid, f"{s} vs {sid}")
    check([(m["name"], m["value"], m["isRegex"]) for m in s["matchers"]]
          == [("instance", r"loki\.example\.com(:[0-9]+)?", True)], s["matchers"])
    ends = datetime.datetime.fromisoformat(s["endsAt"].replace("Z", "+00:00"))
    left = (ends - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    check(25 * 60 < left <= 30 * 60 + 5, f"the silence must end at the job's deadline: {s['endsAt']}")

    def silenced():
        got = {a["labels"]["instance"]: a["status"]["silencedBy"] for a in am.get("/api/v2/alerts")}
        return got if got.get("loki.example.com:9100") == [sid] else None
    got = wait_for(silenced, 20, "the host's alert to be silenced")
    check(got["thor.example.com:9100"] == [], f"another host's alert was silenced: {got}")

    # Twice, and killed midway then again: still exactly one silence for the job.
    r2 = run_worker("monitoring:suppress", design, env, expect=0)
    check(r2.clipboard(design)["monitoring"]["silence_id"] == sid and "already silenced" in r2.err, r2.err)
    env6 = worker_env(state, "monitoring:suppress", job="6")
    for delay in (0.05, 0.2, 0.4):
        killed_midway("monitoring:suppress", design, env6, delay)
    r6 = run_worker("monitoring:suppress", design, env6, expect=0)
    check(len(active("6")) == 1 and len(active("5")) == 1, am.get("/api/v2/silences"))
    sid6 = r6.clipboard(design)["monitoring"]["silence_id"]

    # monitoring:enable expires exactly job 5's silence.
    cb5 = r.clipboard(design)
    after = dump(cb5)
    enable_env = worker_env(state, "monitoring:enable", job="5")
    r = run_worker("monitoring:enable", after, enable_env, expect=0)
    check(r.clipboard(after)["monitoring"]["state"] == "enabled", r.out)
    check(active("5") == [] and [s["id"] for s in active("6")] == [sid6], am.get("/api/v2/silences"))
    check(am.get(f"/api/v2/silence/{sid}")["status"]["state"] == "expired", "expired")
    r = run_worker("monitoring:enable", after, enable_env, expect=0)
    check("expired already" in r.err, r.err)
    # Killed midway, then again: job 6's is expired once.
    after6 = dump(r6.clipboard(design))
    env6e = worker_env(state, "monitoring:enable", job="6")
    killed_midway("monitoring:enable", after6, env6e, 0.15)
    run_worker("monitoring:enable", after6, env6e, expect=0)
    check(active("6") == [], "job 6's silence")
    # Someone else's silence id: left alone, and the stage says so.
    am.post("/api/v2/silences", {"matchers": [{"name": "instance", "value": "x", "isRegex": False}],
                                 "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
                                 "createdBy": "alice", "comment": "maintenance"})
    [other] = [s for s in am.get("/api/v2/silences") if s["createdBy"] == "alice"]
    cb5["monitoring"]["silence_id"] = other["id"]
    r = run_worker("monitoring:enable", dump(cb5), enable_env, expect=1)
    check("was created by 'alice', not jarvis job 5: left alone" in r.last, r.last)
    check(am.get(f"/api/v2/silence/{other['id']}")["status"]["state"] == "active", "alice's silence")

    # Nothing listening, bad settings: clear reasons.
    down = design.replace(am.url, f"http://127.0.0.1:{free_port()}")
    r = run_worker("monitoring:suppress", down, env, expect=1)
    check("could not be reached to list silences: connection refused" in r.last, r.last)
    r = run_worker("monitoring:suppress", design.replace(am.url, "file:///etc/passwd"), env, expect=2)
    check("must be an http:// or https:// URL" in r.last, r.last)
    r = run_worker("monitoring:suppress", dump({"instance": {"hostname": "loki", "provider": "linode"}}),
                   env, expect=2)
    check("no Alertmanager configured" in r.last, r.last)
    # Matchers of the design's own.
    custom = dump({"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "linode"},
                   "monitoring": {"alertmanager": am.url, "matchers": {"host": "{host}", "env": "prod"}}})
    r = run_worker("monitoring:suppress", custom, worker_env(state, "monitoring:suppress", job="9"), expect=0)
    [s9] = active("9")
    check(sorted((m["name"], m["value"]) for m in s9["matchers"]) == [("env", "prod"), ("host", "loki")], s9)
    ok = True
finally:
    am.cleanup(ok)
print("worker_monitoring: ok")
