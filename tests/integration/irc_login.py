"""A server that wants a password: the bot logs in with the password from a file named in its
config (never inline), the password appears in no log; with a wrong one it is refused, says
so, and keeps retrying without crashing."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, wait_for  # noqa: E402
from irc_support import Client, Ngircd, bot_config, make_bot_files  # noqa: E402

binary, source, build = sys.argv[1:4]
secret = "s3rv3r-pa55-9d1c"
server = Ngircd(password=secret)
work = server.dir
make_bot_files(work)
with open(f"{work}/irc.pass", "w") as f:
    f.write(secret + "\n")
with open(f"{work}/wrong.pass", "w") as f:
    f.write("not-the-password\n")


def start(name, pass_file):
    cfg = bot_config(work, server, name=name, irc_extra=f"  password_file: {pass_file}\n")
    log = f"{work}/{name}.log"
    return subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w")), log


# An inline password is refused outright.
inline = bot_config(work, server, name="inline", irc_extra=f"  password: {secret}\n")
p = subprocess.run([binary, "check-config", "--config", inline], capture_output=True, text=True)
check(p.returncode == 2 and "may not be written inline" in p.stderr, p.stderr)
check(secret not in p.stderr + p.stdout, "the inline password was echoed")

bot, log = start("jarvis", "irc.pass")
alice = Client(server, "alice", password=secret)
alice.join("#ops")
alice.wait_member("#ops", "jarvis", 20, "jarvis to log in and join")
alice.say("#ops", "jarvis: jobs")
alice.expect("#ops", lambda t: t == "no jobs in flight", what="an answer")

wrong, wrong_log = start("jarvis2", "wrong.pass")
wait_for(lambda: open(wrong_log).read().count("irc: disconnected") >= 2, 30,
         "the refused bot to say so and retry")
check("disconnected (server: Access denied: Bad password?)" in open(wrong_log).read(),
      open(wrong_log).read())
check(wrong.poll() is None, "the refused bot must keep running")
for path in (log, wrong_log, f"{work}/ngircd.log"):
    check(secret not in open(path).read() or path.endswith("ngircd.log"), f"password in {path}")
wrong.terminate()
wrong.wait(timeout=30)
bot.terminate()
check(bot.wait(timeout=30) == 0, "jarvis serve exits 0")
server.cleanup()
print("ok")
