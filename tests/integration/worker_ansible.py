"""config:run, storage:mount, kernel:upgrade and config:install_agent: ansible-playbook over
SSH to a real sshd the test starts, as an unprivileged user (a user made for the test when run
as root, else the current user), with the host key ssh:wait_fingerprints read. A harmless
playbook (a file in the user's home): the first run changes it, the second nothing; a failing
task is named; a wrong host key is refused; storage:mount, kernel:upgrade and the puppet agent
in Ansible's check mode, so this machine is not changed. Killed midway, then run again."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import check  # noqa: E402
from worker_support import Sshd, dump, killed_midway, run_worker, worker_env  # noqa: E402

sshd = Sshd()
ok = False
state = tempfile.mkdtemp(prefix="jarvis-ansible-state-")
try:
    books = os.path.join(state, "playbooks")
    os.makedirs(books)
    with open(os.path.join(books, "site.yml"), "w") as f:
        f.write("""- hosts: all
  gather_facts: false
  tasks:
    - name: who am I
      ansible.builtin.command: id -un
      register: me
      changed_when: false
    - name: leave a mark
      ansible.builtin.copy:
        content: "built by jarvis for {{ jarvis_fqdn }} as {{ me.stdout }}\\n"
        dest: "{{ ansible_env.HOME | default('~') }}/jarvis-was-here"
        mode: "0644"
""")
    with open(os.path.join(books, "broken.yml"), "w") as f:
        f.write("""- hosts: all
  gather_facts: false
  tasks:
    - name: fine
      ansible.builtin.command: "true"
      changed_when: false
    - name: break on purpose
      ansible.builtin.command: /bin/false
""")
    base = {"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "linode",
                         "ip": "127.0.0.1", "ssh_port": sshd.port},
            "config": {"user": sshd.user, "become": False, "playbook": "site"}}
    # The host keys, as the pipeline gets them: ssh:wait_fingerprints before.
    r = run_worker("ssh:wait_fingerprints", dump(base), worker_env(state, "ssh:wait_fingerprints"), expect=0)
    clip = r.out
    env = worker_env(state, "config:run", JARVIS_ANSIBLE_SSH_KEY_FILE=sshd.client_key,
                     JARVIS_ANSIBLE_PLAYBOOK_DIR=books)
    mark = os.path.join(sshd.home, "jarvis-was-here")

    r = run_worker("config:run", clip, env, expect=0, timeout=120)
    with open(mark) as f:
        check(f.read() == f"built by jarvis for loki.example.com as {sshd.user}\n", "the mark")
    last = r.clipboard(clip)["config_management"]["last_run"]
    check(last["changed"] == "1" and last["failed"] == "0", last)
    check("TASK [leave a mark]" in r.err and f"changed: [loki]" in r.err, "ansible's output in the log")
    r = run_worker("config:run", clip, env, expect=0, timeout=120)
    check(r.clipboard(clip)["config_management"]["last_run"]["changed"] == "0", r.out)
    os.unlink(mark)
    killed_midway("config:run", clip, env, 1.0)
    r = run_worker("config:run", clip, env, expect=0, timeout=120)
    check(os.path.exists(mark) and not os.listdir(os.path.join(state, "ansible")), "after a kill")

    r = run_worker("config:run", clip.replace("playbook: site", "playbook: broken"), env, expect=1, timeout=120)
    check(r.last.startswith("config:run of broken.yml: ansible task 'break on purpose' failed on loki:"), r.last)
    r = run_worker("config:run", clip.replace("playbook: site", "playbook: ../etc/x"), env, expect=2)
    check("config.playbook" in r.last, r.last)
    # A host key that is not the host's: ssh refuses, Ansible reports it unreachable.
    other = dump({**{k: v for k, v in base.items()},
                  "instance": dict(base["instance"], ssh_host_keys={"ed25519": open(sshd.client_key + ".pub").read().strip()})})
    r = run_worker("config:run", other, env, expect=1, timeout=120)
    check("answers with a host key that is not one ssh:wait_fingerprints read" in r.last, r.last)
    r = run_worker("config:run", dump(base), env, expect=2)
    check("instance.ssh_host_keys is missing" in r.last, r.last)

    # storage:mount and kernel:upgrade in check mode; the agent too.
    checked = clip.replace("become: false", "become: false\n  check_mode: true")
    mounts = checked.replace("  ssh_port:", f"  mounts:\n  - {{device: tmpfs, path: {sshd.home}/data, "
                                           "fstype: tmpfs, options: 'size=1m'}\n  ssh_port:")
    senv = dict(env, JARVIS_TASK="storage:mount")
    r = run_worker("storage:mount", mounts, senv, expect=0, timeout=120)
    st = r.clipboard(mounts)["storage"]
    check(st["fstab"] == [f"tmpfs {sshd.home}/data tmpfs size=1m 0 0"] and st["changed"] == "1", st)
    check(not os.path.exists(f"{sshd.home}/data"), "check mode must not change the machine")
    killed_midway("storage:mount", mounts, senv, 1.0)
    r2 = run_worker("storage:mount", mounts, senv, expect=0, timeout=120)
    check(r2.out == r.out, "twice: the same")
    r = run_worker("storage:mount", checked, senv, expect=0)
    check("skipped: no instance.mounts" in r.err, r.err)
    r = run_worker("storage:mount", mounts.replace("path: " + sshd.home, "path: 'x y"), senv, expect=2)

    kenv = dict(env, JARVIS_TASK="kernel:upgrade")
    r = run_worker("kernel:upgrade", checked, kenv, expect=0, timeout=120)
    k = r.clipboard(checked)["kernel"]
    check(k["running"] == os.uname().release and k["check_mode"] == "true", k)
    check(k["upgraded"] in ("true", "false") and k["version"], k)
    r2 = run_worker("kernel:upgrade", checked, kenv, expect=0, timeout=120)
    check(r2.out == r.out, "kernel twice")

    aenv = dict(env, JARVIS_TASK="config:install_agent")
    r = run_worker("config:install_agent", checked, aenv, expect=0)
    check("no agent to install" in r.err, r.err)
    puppet = checked.replace("  provider: linode", "  provider: linode\n  config_management: puppet")
    r = run_worker("config:install_agent", puppet, aenv, expect=0, timeout=120)
    cm = r.clipboard(puppet)["config_management"]
    check(cm["agent"] == "puppet" and ("would be installed" in r.err or "is installed" in r.err), r.err)
    r = run_worker("config:install_agent", puppet.replace("puppet", "cfengine"), aenv, expect=2)
    ok = True
finally:
    sshd.cleanup(ok)
print("worker_ansible: ok")
