"""Identities that cannot be borrowed, against a real InspIRCd 3 linked to Atheme services:
the bot logs in with SASL PLAIN (password from a file, never logged); an irc:account:alice
rule lets alice deploy under any nick, while mallory taking the nick alice and alice once
logged out get nothing. Run three times: with account-tag, with only
extended-join + account-notify, and with only WHOIS 330. SASL EXTERNAL with a TLS client
certificate; SASL failures (a wrong password,
a server without SASL: a real ngircd) end the connection with one clear line, unless
irc.sasl.required is false; and check-config on account and mask rules."""
import atexit
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, fail, wait_for  # noqa: E402
from irc_support import Ngircd, bot_config, make_bot_files, make_cert, write_design  # noqa: E402
import services_support  # noqa: E402
from services_support import SaslClient, ServicesNetwork  # noqa: E402

binary, source, build = sys.argv[1:4]
if not services_support.available():
    print("skip: inspircd or atheme-services is not installed (deploy/install-deps)")
    sys.exit(77)

BOT_PW, ALICE_PW = "b0t-sasl-7f3e1", "al1ce-pw-5c2d"


def secret_file(work, name, value):
    path = f"{work}/{name}"
    with open(path, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return path


def sasl_block(pass_file, username=None, required=None):
    s = f"  sasl:\n    mechanism: plain\n    password_file: {pass_file}\n"
    if username:
        s += f"    username: {username}\n"
    if required is not None:
        s += f"    required: {'true' if required else 'false'}\n"
    return s


def start_bot(work, cfg, name):
    log = f"{work}/{name}.log"
    p = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    atexit.register(lambda: p.poll() is None and p.kill())  # a failed check exits at once
    return p, log


def read(path):
    with open(path) as f:
        return f.read()


def stop(bot):
    bot.terminate()
    check(bot.wait(timeout=30) == 0, "jarvis serve exits 0")


def whois_account(client, nick):
    """The account WHOIS shows for `nick` ("" if none, None if not on the network)."""
    client.send(f"WHOIS {nick}")
    account = ""
    end = client.wait(lambda l: f" 318 {client.nick} {nick} " in l or f" 401 {client.nick} {nick} " in l
                      or f" 330 {client.nick} {nick} " in l, 10, f"WHOIS {nick}")
    if f" 401 " in end:
        client.wait(lambda l: f" 318 {client.nick} {nick} " in l, 10, "end of WHOIS")
        return None
    if " 330 " in end:
        account = end.split(" ")[4]
        client.wait(lambda l: f" 318 {client.nick} {nick} " in l, 10, "end of WHOIS")
    return account


def accounts_scenario(mode):
    net = ServicesNetwork(caps=mode)
    work = net.dir
    make_bot_files(work)
    for h in ("web1", "web2", "web3", "web4"):
        write_design(work, h)
    net.register("jarvis", BOT_PW)
    net.register("alice", ALICE_PW)
    # "notify" runs over plaintext without SASL (the relay then carries only the account
    # capabilities); the others over TLS, logged in with SASL PLAIN.
    sasl = mode != "notify"
    cfg = bot_config(work, net, who='"irc:account:alice"', tls=sasl,
                     irc_extra=sasl_block(secret_file(work, "sasl.pass", BOT_PW)) if sasl else "  accounts: true\n")
    bot, log = start_bot(work, cfg, "jarvis")
    watcher = SaslClient(net, "watcher")
    watcher.join("#ops")
    watcher.wait_member("#ops", "jarvis", 30, f"[{mode}] jarvis to log in and join")
    if sasl:
        check("logged in with SASL PLAIN as account jarvis" in read(log), read(log))
        check(whois_account(watcher, "jarvis") == "jarvis", f"[{mode}] the bot is not logged in to its account")
    else:
        check(whois_account(watcher, "jarvis") == "", f"[{mode}] the bot has an account it never logged in to")

    alice = SaslClient(net, "alice", password=ALICE_PW)
    alice.join("#ops")
    alice.say("#ops", "jarvis: deploy web1")
    alice.expect("#ops", lambda t: t.startswith("web1: deploying"), what=f"[{mode}] alice's deploy by account")

    # Her right follows her account, not her nick.
    alice.send("NICK alice_away")
    alice.wait(lambda l: " NICK " in l and "alice_away" in l, 10, "the nick change")
    alice.nick = "alice_away"
    alice.say("#ops", "jarvis: deploy web2")
    alice.expect("#ops", lambda t: t.startswith("web2: deploying"), what=f"[{mode}] alice's deploy under a new nick")

    # mallory takes the nick alice (a rule irc:alice!*@* would let her in). Her own username:
    # refusals are answered once a minute per person, and a person without an account is
    # their user@host, which logged-out alice below would otherwise share.
    mallory = SaslClient(net, "alice", user="mallory")
    mallory.join("#ops")
    mallory.say("#ops", "jarvis: deploy web3")
    refusal = mallory.expect("#ops", lambda t: "you may not" in t or t.startswith("web3: "),
                             what=f"[{mode}] mallory's answer")
    check(refusal.startswith("alice: you may not deploy"), f"[{mode}] mallory as alice got: {refusal}")

    # Logged out, alice is nobody to an account rule.
    alice.say("NickServ", "LOGOUT")
    alice.wait(lambda l: "NOTICE" in l and "logged out" in l.lower(), 10, "NickServ LOGOUT")
    alice.say("#ops", "jarvis: deploy web4")
    refusal = alice.expect("#ops", lambda t: "you may not" in t or t.startswith("web4: "),
                           what=f"[{mode}] the logged-out answer")
    check(refusal.startswith("alice_away: you may not deploy"), f"[{mode}] logged-out alice got: {refusal}")

    # The audit trail says which account asked, and that the nick alice was refused.
    audit = subprocess.run([binary, "audit", "--config", cfg], capture_output=True, text=True).stdout
    check(re.search(r"irc:alice_away!alice@\S+ \(account alice\)", audit), f"[{mode}] audit:\n{audit}")
    check(re.search(r"irc:alice!mallory@\S+.*refused|refused.*irc:alice!mallory@", audit), f"[{mode}] audit:\n{audit}")
    bot_log = read(log)
    # Each run took the path it is meant to test.
    source_line = {"all": None, "notify": "accounts come from extended-join, account-notify and WHOIS",
                   "none": "accounts come from WHOIS (330) only"}[mode]
    check(("no account-tag" not in bot_log) if source_line is None else source_line in bot_log, bot_log)
    check(BOT_PW not in bot_log and ALICE_PW not in bot_log, f"[{mode}] a password in the bot's log")
    # check-config --online says how this server vouches for people.
    online = subprocess.run([binary, "check-config", "--online", "--config", cfg], capture_output=True, text=True,
                            timeout=60)
    expected = {"all": "irc: people are known by services accounts from account-tag",
                "notify": "irc: people are known by services accounts from extended-join and account-notify",
                "none": "irc: people are known by services accounts from WHOIS (330) only"}[mode]
    check(any(l.startswith(expected) for l in online.stdout.splitlines()), f"[{mode}] online: {online.stdout}")
    check(BOT_PW not in online.stdout + online.stderr, f"[{mode}] the password in check-config's output")
    for c in (alice, mallory, watcher):
        c.close()
    stop(bot)
    return net


for mode in ("all", "notify", "none"):
    net = accounts_scenario(mode)
    if mode != "all":
        net.cleanup()
        continue
    # SASL failures, on the same network.
    work = net.dir
    watcher = SaslClient(net, "watcher2")
    watcher.join("#ops")
    wrong = secret_file(work, "wrong.pass", "not-the-password")
    cfg = bot_config(work, net, name="strict", irc_extra=sasl_block(wrong, username="jarvis"))
    strict, strict_log = start_bot(work, cfg, "strict")
    wait_for(lambda: "irc: disconnected" in read(strict_log), 30, "the refused login to be reported")
    line = next(l for l in read(strict_log).splitlines() if "irc: disconnected" in l)
    check("SASL PLAIN login as jarvis failed" in line and "(904)" in line and "not registering" in line, line)
    check(whois_account(watcher, "strict") is None, "a bot whose SASL login failed registered anyway")
    check(strict.poll() is None, "the refused bot must keep running (and retry)")
    stop(strict)

    cfg = bot_config(work, net, name="lenient", irc_extra=sasl_block(wrong, username="jarvis", required=False))
    lenient, lenient_log = start_bot(work, cfg, "lenient")
    watcher.wait_member("#ops", "lenient", 30, "the lenient bot to register without SASL")
    check("registering without it (irc.sasl.required is false)" in read(lenient_log), read(lenient_log))
    check(whois_account(watcher, "lenient") == "", "the lenient bot has an account it did not log in to")
    stop(lenient)

    # SASL EXTERNAL: the TLS client certificate is the login (its fingerprint on the account).
    bot_cert, bot_key = make_cert(work, "bot-client", cn="jarvis")
    os.chmod(bot_key, 0o600)
    net.add_cert("jarvis", BOT_PW, bot_cert, bot_key)
    cfg = bot_config(work, net, name="extbot",
                     irc_extra=f"  tls_client_cert: {bot_cert}\n  tls_client_key: {bot_key}\n"
                               "  sasl: {mechanism: external}\n")
    ext, ext_log = start_bot(work, cfg, "extbot")
    watcher.wait_member("#ops", "extbot", 30, "the bot to log in with SASL EXTERNAL")
    check("logged in with SASL EXTERNAL as account jarvis" in read(ext_log), read(ext_log))
    check(whois_account(watcher, "extbot") == "jarvis", "the EXTERNAL bot is not logged in to jarvis")
    stop(ext)
    os.chmod(bot_key, 0o644)
    p = subprocess.run([binary, "check-config", "--config", cfg], capture_output=True, text=True)
    check(p.returncode == 2 and "is readable by everyone: chmod 600 it" in p.stderr, p.stdout + p.stderr)
    watcher.close()

    # check-config: an account rule is fine with SASL; without it, an error with its line.
    p = subprocess.run([binary, "check-config", "--config", f"{work}/jarvis.yaml"], capture_output=True, text=True)
    check(p.returncode == 0 and "account rule" not in p.stdout, p.stdout + p.stderr)
    no_accounts = bot_config(work, net, name="noacc", who='"irc:account:alice"')
    p = subprocess.run([binary, "check-config", "--config", no_accounts], capture_output=True, text=True)
    check(p.returncode == 1 and re.search(r"noacc\.yaml:\d+: acl rule 1: who 'irc:account:alice' is an account rule, "
                                          r"and irc.accounts is off", p.stdout), p.stdout + p.stderr)
    masks = bot_config(work, net, name="masks")
    p = subprocess.run([binary, "check-config", "--config", masks], capture_output=True, text=True)
    check(p.returncode == 0 and re.search(r"warning: .*masks\.yaml:\d+: acl rule 1: who 'irc:alice!\*@\*' is a "
                                          r"nick!user@host mask: on a network without accounts", p.stdout),
          p.stdout + p.stderr)
    net.cleanup()

# A server without SASL (a real ngircd): one clear line, never registered.
server = Ngircd()
work = server.dir
make_bot_files(work)
cfg = bot_config(work, server, name="nosasl", irc_extra=sasl_block(secret_file(work, "p.pass", BOT_PW)))
bot, log = start_bot(work, cfg, "nosasl")
wait_for(lambda: "irc: disconnected" in read(log), 30, "the missing SASL to be reported")
line = next(l for l in read(log).splitlines() if "irc: disconnected" in l)
check("SASL PLAIN login as nosasl failed: the server offers no SASL" in line, line)
check(BOT_PW not in read(log), "the password in the log")
stop(bot)
server.cleanup()
print("ok")
