"""Helpers for end-to-end tests that drive the real `jarvis` binary."""
import os
import shutil
import subprocess
import sys
import tempfile
import time


class Jarvis:
    def __init__(self, binary, source_dir, build_dir, workers_path=None, pipelines_dir=None):
        self.binary = binary
        self.source = source_dir
        self.tmp = tempfile.mkdtemp(prefix="jarvis-it-")
        self.state = os.path.join(self.tmp, "state")
        self.workers_path = workers_path or f"{source_dir}/workers:{build_dir}/workers"
        self.pipelines_dir = pipelines_dir or f"{source_dir}/pipelines"

    def args(self, *words):
        return [self.binary, *words, "--state-dir", self.state, "--workers-path",
                self.workers_path, "--pipelines-dir", self.pipelines_dir]

    def run(self, *words, timeout=120, expect=None):
        p = subprocess.run(self.args(*words), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if expect is not None and p.returncode != expect:
            fail(f"jarvis {' '.join(words)} exited {p.returncode}, expected {expect}\n"
                 f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def cleanup(self):
        """At the end of a passing test (a failing one keeps its files for reading)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def status(self, target):
        return self.run("status", target).stdout.strip()


def fail(message):
    print("FAIL:", message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def wait_for(predicate, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    fail(f"timed out after {timeout}s waiting for {what}")


def config_head(work, name, workers=(), workers_extra=""):
    """The start every test config shares: the state, pipelines, designs and workers of the
    test's temp dir (make_bot_files lays them out), plus more worker dirs or keys if given."""
    paths = ", ".join([f"{work}/workers", *workers])
    return f"""state_dir: {work}/state-{name}
pipelines_dir: {work}/pipelines
designs_dir: {work}/designs
workers:
  path: [{paths}]
{workers_extra}"""


def step_setup(j, worker, pipeline, hosts, workers_extra=""):
    """A temp work dir for CLI tests: one worker `step:run` (a /bin/sh body), one pipeline
    (`pipeline` is its YAML), a design per host (provider test) in designs/, and a config naming
    them. Returns the config's path."""
    import stat
    w = j.tmp
    for d in ("workers/step", "pipelines", "designs"):
        os.makedirs(f"{w}/{d}", exist_ok=True)
    with open(f"{w}/workers/step/run", "w") as f:
        f.write("#!/bin/sh\n" + worker)
    os.chmod(f"{w}/workers/step/run", stat.S_IRWXU)
    import re
    name = re.search(r"^name: (\S+)", pipeline, re.M).group(1)  # the file is named after it
    with open(f"{w}/pipelines/{name}.yaml", "w") as f:
        f.write(pipeline)
    for host in hosts:
        with open(f"{w}/designs/{host}.yaml", "w") as f:
            f.write(f"instance:\n  hostname: {host}\n  provider: test\n")
    config = f"{w}/jarvis.yaml"
    with open(config, "w") as f:
        f.write(f"state_dir: {j.state}\npipelines_dir: {w}/pipelines\ndesigns_dir: {w}/designs\n"
                f"workers:\n  path: [{w}/workers]\n{workers_extra}")
    return config
