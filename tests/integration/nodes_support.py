"""Several `jarvis serve` nodes on one real PostgreSQL, for the multi-node tests: each node has
its own state dir and config (store: {kind: postgres, url_file}, node: {name, lease}), commands
go to its console on stdin, its stdout and stderr go to files. The workers write side files
(one line when a stage starts, one when it ends, with the node that ran it), from which the
tests prove how often each stage ran."""
import os
import signal
import stat
import subprocess
import time

from jarvis_test import fail, wait_for
from pg_support import Postgres

WORKER = """#!/bin/sh
c=$(cat)
node=$(basename "$JARVIS_STATE_DIR")
echo "start $JARVIS_HOST $JARVIS_STAGE $node $$ $(date +%s.%N)" >> {side}
sleep "$(cat {delay})"
echo "end $JARVIS_HOST $JARVIS_STAGE $node $$ $(date +%s.%N)" >> {side}
printf '%s\\nstage%s_by: %s\\n' "$c" "$JARVIS_STAGE" "$node"
"""


class Cluster:
    def __init__(self, binary, work, nodes=3, stages=3, max_running=8, lease="3s", delay="0.3", extra=""):
        self.binary, self.work, self.stages = binary, work, stages
        self.pg = Postgres()
        self.pg.create_database("jarvis")
        self.side = f"{work}/side"
        self.delay = f"{work}/delay"
        self.set_delay(delay)
        for d in ("workers/step", "pipelines", "designs"):
            os.makedirs(f"{work}/{d}", exist_ok=True)
        with open(f"{work}/workers/step/run", "w") as f:
            f.write(WORKER.format(side=self.side, delay=self.delay))
        os.chmod(f"{work}/workers/step/run", stat.S_IRWXU)
        tasks = ", ".join(["step:run"] * stages)
        with open(f"{work}/pipelines/steps.yaml", "w") as f:
            f.write(f"name: steps\nmatch: {{provider: test}}\ntasks: [{tasks}]\n")
        url_file = self.pg.write_url_file(f"{work}/pg.url", "jarvis")
        self.procs = {}
        self.configs = []
        for i in range(1, nodes + 1):
            config = f"{work}/node-{i}.yaml"
            with open(config, "w") as f:
                f.write(f"state_dir: {work}/node-{i}\npipelines_dir: {work}/pipelines\n"
                        f"designs_dir: {work}/designs\nworkers:\n  path: [{work}/workers]\n"
                        f"max_running_jobs: {max_running}\n"
                        f"store: {{kind: postgres, url_file: {url_file}}}\n"
                        f"node: {{name: runner-{i}, lease: {lease}}}\n" + extra)
            self.configs.append(config)

    def set_delay(self, seconds):
        with open(self.delay, "w") as f:
            f.write(f"{seconds}\n")

    def design(self, host):
        with open(f"{self.work}/designs/{host}.yaml", "w") as f:
            f.write(f"instance:\n  hostname: {host}\n  provider: test\n")

    def start(self, i):
        out = open(f"{self.work}/node-{i}.out", "a")
        err = open(f"{self.work}/node-{i}.err", "a")
        self.procs[i] = subprocess.Popen([self.binary, "serve", "--config", self.configs[i - 1]],
                                         stdin=subprocess.PIPE, stdout=out, stderr=err, text=True)
        return self.procs[i]

    def say(self, i, line):
        self.procs[i].stdin.write(line + "\n")
        self.procs[i].stdin.flush()

    def leader(self):
        """The node that holds the chat connections (by its log), or None."""
        for i, p in self.procs.items():
            if p.poll() is None and "leads chat" in self.errors(i):
                return i
        return None

    def kill9(self, i):
        self.procs[i].kill()
        self.procs[i].wait()

    def signal(self, i, sig):
        os.kill(self.procs[i].pid, sig)

    def output(self, i):
        with open(f"{self.work}/node-{i}.out") as f:
            return f.read()

    def errors(self, i):
        with open(f"{self.work}/node-{i}.err") as f:
            return f.read()

    def sql(self, statement):
        return self.pg.sql(statement, "jarvis")

    def count(self, where):
        return int(self.sql(f"SELECT count(*) FROM jobs WHERE {where}") or 0)

    def side_lines(self):
        try:
            with open(self.side) as f:
                return [line.split() for line in f.read().splitlines()]
        except FileNotFoundError:
            return []

    def starts(self):
        """(host, stage) -> the nodes that started it, in order."""
        runs = {}
        for kind, host, stage, node, _pid, _t in self.side_lines():
            if kind == "start":
                runs.setdefault((host, int(stage)), []).append(node)
        return runs

    def wait_ready(self, n, timeout):
        wait_for(lambda: self.count("state = 'ready'") >= n, timeout, f"{n} jobs ready "
                 f"(now: {self.sql('SELECT state || count(*) FROM jobs GROUP BY state')})")

    def clipboard(self, host):
        return self.sql("SELECT convert_from(d.clipboard, 'UTF8') FROM jobs j JOIN job_documents d "
                        f"ON d.job_id = j.id WHERE j.host = '{host}' ORDER BY j.id DESC LIMIT 1")

    def check_every_stage_ran(self, hosts, at_most=1, except_for=()):
        """Every stage of every host started at least once, and at most `at_most` times (more
        only for the (host, stage) pairs in except_for, which at-least-once allows to rerun)."""
        runs = self.starts()
        for h in hosts:
            for s in range(1, self.stages + 1):
                n = len(runs.get((h, s), []))
                limit = 2 if (h, s) in except_for else at_most
                if n < 1 or n > limit:
                    fail(f"{h} stage {s} started {n} times (allowed 1..{limit}): {runs.get((h, s))}")

    def stop_all(self):
        for i, p in self.procs.items():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=20)
                except Exception:  # noqa: BLE001
                    p.kill()

    def cleanup(self):
        self.stop_all()
        self.pg.cleanup()


def max_overlap(lines):
    """The most workers running at once, from the side file's start and end lines."""
    events = []
    for kind, _h, _s, _n, _pid, t in lines:
        events.append((float(t), 1 if kind == "start" else -1))
    events.sort(key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def settle(seconds):
    time.sleep(seconds)
