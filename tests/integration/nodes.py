"""Three `jarvis serve` nodes on one real PostgreSQL (the case is argv[4]):
  spread     60 concurrent deploys sent to the three consoles: all ready, each stage run once,
             every node ran some, never more than max_running_jobs (8) workers at once in all.
  kill9      a runner killed with SIGKILL mid-stage: its jobs are adopted after its lease and
             resume at the running stage with the saved clipboard; only that stage runs twice.
  pg_restart PostgreSQL restarted under load: every job ready, no stage more than twice.
  partition  a runner stopped (SIGSTOP) past its lease, then SIGCONT: its late result is
             refused and the job's outcome is the adopter's.
The side files the workers write are the evidence of how often each stage ran."""
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, fail, wait_for  # noqa: E402
from nodes_support import Cluster, max_overlap  # noqa: E402
from pg_support import PASSWORD  # noqa: E402

binary, source, build, case = sys.argv[1:5]
work = tempfile.mkdtemp(prefix="jarvis-nodes-")


def no_password_anywhere(c):
    for i in c.procs:
        check(PASSWORD not in c.output(i) + c.errors(i), f"node {i} printed the store password")


def spread():
    c = Cluster(binary, work, stages=3, max_running=8, delay="0.2")
    try:
        hosts = [f"h{n:02d}" for n in range(60)]
        for h in hosts:
            c.design(h)
        for i in (1, 2, 3):
            c.start(i)
        time.sleep(1)
        for n, h in enumerate(hosts):
            c.say(n % 3 + 1, f"deploy {h}")
        # The per-host lock holds across nodes: h00 (sent to node 1) asked again on node 2, once
        # node 1 has it (a node still starting reads its console late).
        wait_for(lambda: "h00: deploying with steps" in c.output(1) or "h00: queued" in c.output(1), 20,
                 "node 1 to take h00")
        c.say(2, "deploy h00")
        wait_for(lambda: "h00: already in flight, not starting another" in c.output(2), 20,
                 "node 2 refusing a second h00")
        c.wait_ready(60, 180)
        check(c.count("state <> 'ready'") == 0, "every job ready")
        check(c.count("host = 'h00'") == 1, "one job for h00, however many nodes were asked")
        c.check_every_stage_ran(hosts, at_most=1)
        nodes = {node for node_list in c.starts().values() for node in node_list}
        check(nodes == {"node-1", "node-2", "node-3"}, f"every node ran stages: {nodes}")
        most = max_overlap(c.side_lines())
        check(most <= 8, f"{most} workers ran at once across the nodes; max_running_jobs is 8")
        check(most >= 4, f"only {most} workers at once: the nodes did not share the work")
        # Every deploy was answered by the node it was sent to, once.
        for i in (1, 2, 3):
            out = c.output(i)
            for h in hosts[i - 1::3]:
                check(out.count(f"{h}: deploying with steps") + out.count(f"{h}: queued") == 1,
                      f"node {i}'s answer to deploy {h}:\n{out[-2000:]}")
        no_password_anywhere(c)
        print(f"spread: 60 jobs, most workers at once {most}")
    finally:
        c.cleanup()


def kill9():
    c = Cluster(binary, work, stages=4, max_running=30, delay="1")
    try:
        hosts = [f"k{n}" for n in range(9)]
        for h in hosts:
            c.design(h)
        for i in (1, 2, 3):
            c.start(i)
        time.sleep(1)
        for n, h in enumerate(hosts):
            c.say(n % 3 + 1, f"deploy {h}")
        # Node 2 is killed while its jobs are at stage 2.
        # (Which node claims which job is a race between the nodes: node 2 has at least one.)
        wait_for(lambda: sum(1 for (h, s), n in c.starts().items() if s == 2 and "node-2" in n) >= 1, 30,
                 "node 2's jobs at stage 2")
        time.sleep(0.3)
        running = {(h, s) for (h, s), n in c.starts().items() if n[-1] == "node-2"}
        interrupted = {(h, max(s for hh, s in running if hh == h)) for h, _ in running}
        c.kill9(2)
        t0 = time.time()
        c.wait_ready(9, 60)
        took = time.time() - t0
        c.check_every_stage_ran(hosts, at_most=1, except_for=interrupted)
        reruns = 0
        for h, s in interrupted:
            by = c.starts()[(h, s)]
            if len(by) > 1:
                reruns += 1
                check(by[0] == "node-2" and by[-1] != "node-2", f"{h} stage {s} rerun by another node: {by}")
            else:
                # Killed between stages: node 2 had stored stage s, so the adopter went on at s + 1.
                check(by == ["node-2"] and (s == 4 or c.starts()[(h, s + 1)][-1] != "node-2"),
                      f"{h}: after stage {s} ({by}) stage {s + 1} by {c.starts().get((h, s + 1))}")
            clip = c.clipboard(h)
            for st in range(1, 5):
                check(f"stage{st}_by:" in clip, f"{h}: stage {st}'s mark missing from {clip!r}")
            check(f"stage{s - 1}_by: node-2" in clip or s == 1,
                  f"{h}: the clipboard node 2 saved before stage {s} was resumed with: {clip!r}")
        check(reruns >= 1, f"no stage of node 2 was interrupted and rerun: {interrupted}")
        check(c.count("owner LIKE 'engine-%'") == 9, "every job ended owned by a live engine")
        print(f"kill9: {len(interrupted)} jobs adopted and finished {took:.1f}s after the kill")
    finally:
        c.cleanup()


def pg_restart():
    c = Cluster(binary, work, stages=4, max_running=30, delay="0.4")
    try:
        hosts = [f"p{n:02d}" for n in range(24)]
        for h in hosts:
            c.design(h)
        for i in (1, 2, 3):
            c.start(i)
        time.sleep(1)
        for n, h in enumerate(hosts):
            c.say(n % 3 + 1, f"deploy {h}")
        wait_for(lambda: len(c.side_lines()) >= 30, 30, "the load to start")
        c.pg.stop("fast")
        time.sleep(2)
        c.pg.start()
        c.wait_ready(24, 120)
        c.check_every_stage_ran(hosts, at_most=2)
        for i in (1, 2, 3):
            check(c.procs[i].poll() is None, f"node {i} survived the restart")
            check("job store" in c.errors(i) and "cannot be reached" in c.errors(i),
                  f"node {i} logged the outage:\n{c.errors(i)[-2000:]}")
        for h in hosts:
            clip = c.clipboard(h)
            for st in range(1, 5):
                check(f"stage{st}_by:" in clip, f"{h}: stage {st}'s mark missing: {clip!r}")
        reruns = sum(1 for n in c.starts().values() if len(n) > 1)
        print(f"pg_restart: 24 jobs ready, {reruns} stage runs repeated")
    finally:
        c.cleanup()


def partition():
    c = Cluster(binary, work, stages=3, max_running=8, lease="3s", delay="0.2")
    try:
        c.design("part")
        for i in (1, 2, 3):
            c.start(i)
        time.sleep(1)
        c.set_delay("5")
        c.say(2, "deploy part")
        wait_for(lambda: ("part", 1) in c.starts(), 20, "stage 1 to start on node 2")
        check(c.starts()[("part", 1)] == ["node-2"], c.starts())
        c.signal(2, signal.SIGSTOP)
        c.set_delay("0.2")  # the adopter's run of the stage is quick
        # Past the lease, another node adopts and finishes the job while node 2 is stopped; node
        # 2's worker keeps running and ends with its result waiting in the pipe.
        c.wait_ready(1, 30)
        wait_for(lambda: sum(1 for l in c.side_lines() if l[0] == "end" and l[3] == "node-2") >= 1, 20,
                 "node 2's worker to finish")
        before = c.clipboard("part")
        c.signal(2, signal.SIGCONT)
        time.sleep(3)
        after = c.clipboard("part")
        check(after == before, f"node 2's late result changed the job: {before!r} -> {after!r}")
        check("stage1_by: node-2" not in after, f"the adopter's stage 1 stands: {after!r}")
        check(c.count("state = 'ready'") == 1, "the job is ready")
        err2 = c.errors(2)
        check("adopted by" in err2 or "was refused" in err2, f"node 2 says it let go:\n{err2[-3000:]}")
        check(c.procs[2].poll() is None, "node 2 runs on after SIGCONT")
        # Node 2 is a full member again: it takes new work.
        c.design("after")
        c.say(2, "deploy after")
        c.wait_ready(2, 30)
        print("partition: the late result was refused; the adopter's outcome stands")
    finally:
        c.cleanup()


def cancel():
    """cancel from one node kills the worker on the node that runs the job; a clean stop of a
    node hands its jobs over at once (no lease to wait for)."""
    c = Cluster(binary, work, stages=3, max_running=8, lease="10s", delay="30")
    try:
        c.design("far")
        c.design("moved")
        for i in (1, 2, 3):
            c.start(i)
        time.sleep(1)
        c.say(1, "deploy far")
        wait_for(lambda: ("far", 1) in c.starts(), 20, "far's stage 1 on node 1")
        pid = int(next(l[4] for l in c.side_lines() if l[1] == "far"))
        c.say(3, "cancel far")
        wait_for(lambda: c.count("state = 'cancelled'") == 1, 10, "the job cancelled")
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z", 10,
                 "node 1 to kill the worker")
        check("far: cancelling job 1 at stage 1/3" in c.output(3), f"node 3's answer: {c.output(3)[-500:]}")
        check("cancelled by root at stage 1/3" in c.errors(1), "node 1, which ran it, cancelled it")
        # SIGTERM on the runner: its job is adopted well before the 10 s lease.
        c.set_delay("0.2")
        c.say(2, "deploy moved")
        wait_for(lambda: ("moved", 1) in c.starts(), 20, "moved's stage 1")
        runner = int(c.starts()[("moved", 1)][0].split("-")[1])
        c.procs[runner].send_signal(signal.SIGTERM)
        check(c.procs[runner].wait(timeout=20) == 0, "the node stops cleanly")
        t0 = time.time()
        wait_for(lambda: c.count("state = 'ready'") == 1, 10, "moved adopted and ready")
        took = time.time() - t0
        check(took < 8, f"handed over in {took:.1f}s: the lease was given up, not waited out")
        print(f"cancel: worker killed on node 1 from node 3; a stopped node's job ready {took:.1f}s later")
    finally:
        c.cleanup()


{"cancel": cancel, "spread": spread, "kill9": kill9, "pg_restart": pg_restart, "partition": partition}[case]()
shutil.rmtree(work, ignore_errors=True)  # a failing case exits before this and keeps its files
print("ok")
