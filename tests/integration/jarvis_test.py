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
