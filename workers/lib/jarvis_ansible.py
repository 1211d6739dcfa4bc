"""Running ansible-playbook (Debian's ansible) against the new host over SSH, for config:run,
storage:mount, kernel:upgrade and config:install_agent.

The inventory is built from the clipboard: one host named instance.hostname at instance.ip,
port instance.ssh_port (22), as config.user (JARVIS_ANSIBLE_USER, default root) with the
private key JARVIS_ANSIBLE_SSH_KEY_FILE (environment only). The host key must be one that
ssh:wait_fingerprints read (instance.ssh_host_keys): ssh checks it strictly against a
known_hosts file made from them, never trusting on first use. config.become
(JARVIS_ANSIBLE_BECOME; default: yes unless the user is root) runs tasks through sudo.
config.check_mode (JARVIS_ANSIBLE_CHECK) runs in Ansible's check mode: nothing is changed.

Ansible's output streams into the job log line by line; a failure names the failed task and
Ansible's message. Nothing is read from ansible.cfg files or ~/.ansible: the run has its own
config and home in $JARVIS_STATE_DIR/ansible/<host>@<job>/, removed afterwards.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import jarvis_worker as jw

HERE = os.path.dirname(os.path.realpath(__file__))
PLAYBOOKS = os.path.join(HERE, "ansible")


def playbook(name):
    """One of the playbooks shipped with the workers (workers/lib/ansible/<name>.yml)."""
    return os.path.join(PLAYBOOKS, f"{name}.yml")


class Target:
    def __init__(self, w):
        self.w = w
        self.host = w.host
        self.address = jw.check_ip(w.need("instance.ip", "did the provider's get_ip run?"), "instance.ip")
        self.port = jw.check_port(w.setting("instance.ssh_port", "JARVIS_SSH_PORT", 22), "instance.ssh_port")
        self.user = str(w.setting("config.user", "JARVIS_ANSIBLE_USER", "root"))
        if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", self.user):
            raise jw.Failure("config.user is not a user name (lower-case letters, digits, '_', '-', '.')", 2)
        become = w.setting("config.become", "JARVIS_ANSIBLE_BECOME")
        self.become = jw.flag(become) if become is not None else self.user != "root"
        self.check = jw.flag(w.setting("config.check_mode", "JARVIS_ANSIBLE_CHECK", False))
        self.key = os.environ.get("JARVIS_ANSIBLE_SSH_KEY_FILE")
        keys = w.get("instance.ssh_host_keys")
        if not isinstance(keys, dict) or not keys:
            raise jw.Failure("instance.ssh_host_keys is missing from the clipboard: did "
                             "ssh:wait_fingerprints run? (jarvis never trusts a host key on first use)", 2)
        self.host_keys = []
        for kind, line in keys.items():
            parts = jw.check_line(line, f"instance.ssh_host_keys.{kind}", 16384).split()
            if len(parts) < 2 or not re.fullmatch(r"[a-z0-9-]+", parts[0]) \
                    or not re.fullmatch(r"[A-Za-z0-9+/=]+", parts[1]):
                raise jw.Failure(f"instance.ssh_host_keys.{kind} is not a public key line", 2)
            self.host_keys.append(f"{parts[0]} {parts[1]}")
        self.where = f"{self.address}:{self.port}"

    def run(self, book, what, extra_vars=None, timeout=None):
        """Runs the playbook; returns (recap dict, [JARVIS_RESULT values])."""
        w = self.w
        if not w.state_dir:
            raise jw.Failure("JARVIS_STATE_DIR is not set: the Ansible run keeps its files there", 2)
        work = os.path.join(w.state_dir, "ansible", f"{self.host}@{jw.check_name(w.job, 'JARVIS_JOB')}")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(os.path.join(work, "home"), mode=0o700)
        try:
            return self._run(work, book, what, extra_vars or {}, timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, work, book, what, extra_vars, timeout):
        known = os.path.join(work, "known_hosts")
        host_pattern = f"[{self.address}]:{self.port}" if self.port != 22 else self.address
        with open(known, "w") as f:
            f.writelines(f"{host_pattern} {k}\n" for k in self.host_keys)
        hostvars = {"ansible_host": self.address, "ansible_port": self.port,
                    "ansible_user": self.user, "ansible_become": self.become,
                    "ansible_python_interpreter": "auto_silent",
                    "jarvis_become": self.become, "jarvis_hostname": self.host,
                    "jarvis_fqdn": str(self.w.get("instance.fqdn") or self.host),
                    "jarvis_job": self.w.job}
        for key, var in (("instance.root_pubkey", "jarvis_root_pubkey"),
                         ("instance.root_key_file", "jarvis_root_key_file")):
            if self.w.get(key):
                hostvars[var] = jw.check_line(self.w.get(key), key)
        if self.key:
            hostvars["ansible_ssh_private_key_file"] = jw.check_line(self.key, "JARVIS_ANSIBLE_SSH_KEY_FILE")
        inventory = os.path.join(work, "inventory.json")
        with open(inventory, "w") as f:
            json.dump({"all": {"hosts": {self.host: hostvars}}}, f)
        extra = os.path.join(work, "vars.json")
        with open(extra, "w") as f:
            json.dump(extra_vars, f)
        cfg = os.path.join(work, "ansible.cfg")
        with open(cfg, "w") as f:
            f.write("[defaults]\n")
        ssh_args = (f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
                    "-o IdentitiesOnly=yes -o BatchMode=yes -o ControlMaster=no "
                    "-o ControlPath=none -o ConnectTimeout=20")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": os.path.join(work, "home"), "ANSIBLE_CONFIG": cfg,
               "ANSIBLE_HOME": os.path.join(work, "home", ".ansible"),
               "ANSIBLE_LOCAL_TEMP": os.path.join(work, "tmp"),
               "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_SSH_ARGS": ssh_args,
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
               "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_DEPRECATION_WARNINGS": "False",
               "ANSIBLE_SYSTEM_WARNINGS": "False", "ANSIBLE_STDOUT_CALLBACK": "default",
               "ANSIBLE_PIPELINING": "True", "ANSIBLE_TIMEOUT": "20",
               "PYTHONUNBUFFERED": "1"}
        for k in ("JARVIS_ENGINE", "JARVIS_RUN", "JARVIS_JOB", "JARVIS_STATE_DIR"):
            if k in os.environ:
                env[k] = os.environ[k]
        cmd = ["ansible-playbook", "-i", inventory, "-e", f"@{extra}", "--limit", self.host]
        if self.check:
            cmd.append("--check")
        cmd.append(book)
        self.w.log(f"ansible-playbook {os.path.basename(book)} on {self.host} ({self.user}@{self.where}"
                   + (", check mode" if self.check else "") + ")")
        try:
            p = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 errors="replace")
        except FileNotFoundError:
            raise jw.Failure("ansible-playbook is not installed (Debian: apt install ansible)", 2)
        task, failure, recap, results = None, None, {}, []
        pending = None
        for line in p.stdout:
            line = line.rstrip("\n")
            if line.strip():
                print(line, file=sys.stderr, flush=True)
            m = re.match(r"TASK \[(.*)\] \*+", line)
            if m:
                task = m.group(1)
            m = re.match(r"(fatal|failed): \[[^\]]+\].*?: (FAILED|UNREACHABLE)! => (.*)", line)
            if m and failure is None:
                failure = (task, m.group(2), _msg(m.group(3)))
            if '"msg": "JARVIS_RESULT ' in line:
                try:
                    text = json.loads("{" + line.strip().rstrip(",") + "}")["msg"]
                    results.append(json.loads(text[len("JARVIS_RESULT "):]))
                except ValueError:
                    pass
            m = re.match(r"(\S+)\s+:\s+(ok=.*)", line)
            if m and m.group(1) == self.host:
                recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        code = p.wait()
        if failure:
            name, kind, msg = failure
            if kind == "UNREACHABLE" and ("HOST IDENTIFICATION HAS CHANGED" in msg
                                          or "Host key verification failed" in msg):
                raise jw.Failure(f"{what}: {self.host} ({self.where}) answers with a host key that "
                                 "is not one ssh:wait_fingerprints read (Host key verification "
                                 "failed): someone else may be answering there", 1)
            if kind == "UNREACHABLE":
                raise jw.Failure(f"{what}: {self.host} ({self.user}@{self.where}) is unreachable for "
                                 f"Ansible: {msg}", 1)
            raise jw.Failure(f"{what}: ansible task '{name}' failed on {self.host}: {msg}", 1)
        if code != 0:
            raise jw.Failure(f"{what}: ansible-playbook exited {code} (see the lines above)", 1)
        return recap, results


def _msg(text):
    """Ansible's message from the JSON after `=>` (which may not be complete on one line)."""
    try:
        data = json.loads(text)
        msg = data.get("msg") or data.get("stderr") or data.get("module_stderr") or ""
        if isinstance(msg, list):
            msg = " ".join(map(str, msg))
        return " ".join(str(msg).split())[:2000] or "no message"
    except ValueError:
        m = re.search(r'"msg": "((?:[^"\\]|\\.)*)"', text)
        return " ".join(m.group(1).split())[:300] if m else " ".join(text.split())[:300]
