"""The seed's world for a Linode redeploy, for tests and bench/linode_redeploy.py: the Linode
API emulator (the one thing simulated: a cloud we cannot reach), whose new node is a real sshd
on its own loopback address (127.0.0.2), and the real servers of the host stages: named (TSIG),
Alertmanager, slapd (the CMDB) and a keys repository pushed to over SSH. The host's old node
exists at the start (running, 192.0.2.99, in DNS, in production serving www).

    world = LinodeWorld(j.tmp, source, build)      # everything started
    world.config(extra=irc_section)                # a jarvis config using all of it
    ...
    world.cleanup(ok)
"""
import glob
import os
import pwd
import sqlite3
import subprocess

from ldap_support import Slapd
from linode_emulator import LinodeEmulator
from worker_support import Alertmanager, Named, Sshd

NODE_ADDRESS = "127.0.0.2"


class LinodeWorld:
    def __init__(self, work, source, build, token="linode-test-token", provider="linode"):
        """provider "ec2": the EC2 Query API emulator instead of Linode's, the same servers."""
        self.work, self.source, self.build, self.provider = work, source, build, provider
        self.servers = []
        self.named = self._up(Named(records="loki IN A 192.0.2.99\nwww IN CNAME loki\n"))
        self.sshd = self._up(Sshd(address=NODE_ADDRESS))
        self.am = self._up(Alertmanager())
        self.slapd = self._up(Slapd())
        if provider == "ec2":
            from ec2_emulator import Ec2Emulator
            self.emu = Ec2Emulator(addresses=[NODE_ADDRESS] * 100, start_s=0.5, stop_s=0.3)
            self.old_node = self.emu.add_instance("loki", ip="192.0.2.99")
            self.aws_file = self._secret("aws.key", f"{self.emu.access_key} {self.emu.secret_key}")
        else:
            self.emu = LinodeEmulator(token=token, addresses=[NODE_ADDRESS] * 100, page_cap=None,
                                      provision_s=0.3, boot_s=0.5, shutdown_s=0.3)
            self.old_node = self.emu.add_node("loki", status="running", ipv4="192.0.2.99")
        self.slapd.add_host("loki", fqdn="loki.example.com",
                            extra_ldif="jarvisProduction: TRUE\njarvisService: www\n")
        self.token_file = self._secret("linode.token", token)
        self.writer_pw = self._secret("cmdb.pass", self.slapd.writer_password)
        self.bare = os.path.join(self.sshd.home, "gitolite-admin.git")
        subprocess.run(["git", "init", "-q", "--bare", self.bare], check=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.sshd.user)
            subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", self.bare], check=True)
        self.known = os.path.join(work, "git_known_hosts")
        self.write_known_hosts()
        self.playbook = os.path.join(work, "site.yml")
        with open(self.playbook, "w") as f:
            f.write("- hosts: all\n  gather_facts: false\n  tasks:\n    - name: hello\n"
                    "      ansible.builtin.command: echo hello from {{ jarvis_fqdn }}\n"
                    "      changed_when: false\n      check_mode: false\n")
        self.designs = os.path.join(work, "designs")
        os.makedirs(self.designs, exist_ok=True)
        self.write_design("loki")

    def _up(self, server):
        self.servers.append(server)
        return server

    def _secret(self, name, value):
        path = os.path.join(self.work, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        return path

    def write_known_hosts(self):
        """The keys repository's host keys (the same sshd: they change with new_node_keys)."""
        with open(self.known, "w") as f:
            for k in ("ed25519", "ecdsa", "rsa"):
                with open(f"{self.sshd.dir}/host_{k}.pub") as pub:
                    f.write(f"[{NODE_ADDRESS}]:{self.sshd.port} {' '.join(pub.read().split()[:2])}\n")

    def new_node_keys(self):
        """A new node has new host keys: sshd restarted with fresh ones."""
        self.sshd.stop()
        self.sshd.make_host_keys()
        self.sshd.start()
        self.write_known_hosts()

    def write_design(self, host, extra=""):
        with open(os.path.join(self.designs, f"{host}.yaml"), "w") as f:
            f.write(f"""instance:
  hostname: {host}
  fqdn: {host}.example.com
  provider: {"EC2" if self.provider == "ec2" else "Linode"}
  guestid: Debian 12
  datacenter: Atlanta
  size: 512
  ssh_port: {self.sshd.port}
  gitosis-admin: 'ssh://{self.sshd.user}@{NODE_ADDRESS}:{self.sshd.port}{self.bare}'
  sshpubkey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd4hPJl8u0x0VPlhLpQ9zEz6Q1p7zZ3b8l0Ue2t8cP0 whitejs@eir.websages.com
  mounts:
    - {{device: tmpfs, path: {self.sshd.home}/data, fstype: tmpfs, options: 'size=1m'}}
services:
  standby: thor
config:
  user: {self.sshd.user}
  become: false
  check_mode: true
ssh:
  wait: 60s
dns:
  timeout: 2s
keep: '007'
{extra}""")

    def env(self):
        n, s = self.named, self.slapd
        if self.provider == "ec2":
            cloud = {"JARVIS_EC2_ENDPOINT_URL": self.emu.url, "JARVIS_EC2_CA_FILE": self.emu.ca_file,
                     "JARVIS_EC2_CREDENTIALS_FILE": self.aws_file, "JARVIS_EC2_REGION": self.emu.region,
                     "JARVIS_EC2_WAIT": "60s"}
        else:
            cloud = {"JARVIS_LINODE_API_URL": self.emu.url, "JARVIS_LINODE_CA_FILE": self.emu.ca_file,
                     "JARVIS_LINODE_TOKEN_FILE": self.token_file, "JARVIS_LINODE_WAIT": "60s"}
        return {**cloud,
                "JARVIS_DNS_SERVER": "127.0.0.1", "JARVIS_DNS_PORT": n.port,
                "JARVIS_DNS_KEY_FILE": n.key_file, "JARVIS_DNS_REVERSE_ZONE": n.reverse_zone,
                "JARVIS_ALERTMANAGER_URL": self.am.url,
                "JARVIS_LDAP_URI": s.uri, "JARVIS_LDAP_HOSTS_OU": s.hosts_ou,
                "JARVIS_LDAP_CA_FILE": s.ca_file, "JARVIS_LDAP_BIND_DN": s.writer_dn,
                "JARVIS_LDAP_PASSWORD_FILE": self.writer_pw,
                "JARVIS_LDAP_UPDATE_HOST": f"{self.build}/workers/ldap/update_host",
                "JARVIS_GIT_SSH_KEY_FILE": self.sshd.client_key, "JARVIS_GIT_KNOWN_HOSTS": self.known,
                "JARVIS_ANSIBLE_SSH_KEY_FILE": self.sshd.client_key,
                "JARVIS_ANSIBLE_PLAYBOOK": self.playbook}

    def config(self, state, extra="", name="jarvis", workers_extra=""):
        path = os.path.join(self.work, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(f"state_dir: {state}\npipelines_dir: {self.source}/pipelines\n"
                    f"designs_dir: {self.designs}\n"
                    f"workers:\n  path: [{self.source}/workers, {self.build}/workers]\n  env:\n"
                    "    PATH: /usr/local/bin:/usr/bin:/bin\n    LANG: C.UTF-8\n"
                    + "".join(f"    {k}: '{v}'\n" for k, v in self.env().items()) + workers_extra + extra)
        return path

    def dig(self, name, rdtype):
        return self.named.dig(name, rdtype)

    def cleanup(self, ok):
        self.emu.stop()
        for s in self.servers:
            s.cleanup(ok)


def stage_times(state, job):
    """[(task, ms)] of the job's stage runs that ended, in order."""
    [db] = [p for p in glob.glob(os.path.join(state, "*")) if p.endswith(".db")][:1] or [None]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT task, ended_ms - started_ms FROM stages WHERE job_id = ? AND "
                           "ended_ms > 0 ORDER BY stage, attempt", (job,)).fetchall()
    finally:
        con.close()


def job_figures(state, job):
    """From the job's records in the store: (total ms from start to end, the workers' own ms:
    the sum of every stage attempt's run, stages run). What jarvis adds is total - workers."""
    [db] = [p for p in glob.glob(os.path.join(state, "*")) if p.endswith((".db", ".sqlite", ".sqlite3"))][:1] or [None]
    if db is None:
        raise RuntimeError(f"no job store in {state}")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        started, ended = con.execute("SELECT started_ms, ended_ms FROM jobs WHERE id = ?", (job,)).fetchone()
        rows = con.execute("SELECT started_ms, ended_ms FROM stages WHERE job_id = ? AND ended_ms > 0",
                           (job,)).fetchall()
    finally:
        con.close()
    return ended - started, sum(e - s for s, e in rows), len(rows)
