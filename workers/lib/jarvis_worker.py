"""Helpers for jarvis workers written in Python (see docs/workers.md).

A worker reads the clipboard (a YAML mapping) on stdin, logs to stderr, and
prints the whole clipboard on stdout, or nothing to leave it unchanged.

    import jarvis_worker as jw

    def task(w):                       # w: Worker
        w.put("instance.checked", True)
        w.log("checked " + w.host)

    jw.run(task)

load() and dump() round-trip the clipboard without changing what any value
means.  Plain yaml.safe_load/safe_dump would: it reads a plain `yes` as true,
`0777` as 511 and `1:20` as 80 and writes them back that way, and it writes the
strings "1e3", "0o17" and "-.5" without quotes, which a YAML 1.2 reader (the
bot's yaml-cpp) takes for numbers.  So load() resolves no types: every scalar
comes back as a Scalar, a str that remembers its quoting, and dump() writes it
back the same way.  Values a worker adds are ordinary Python values; new
strings are quoted whenever YAML 1.1 or 1.2 would read them as anything else.
"""
import copy
import os
import re
import sys
import traceback

import yaml


class Scalar(str):
    """A scalar from the input: its exact text and its style (None = plain)."""
    style = None


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {}    # no type guessing: untagged scalars are text


def _construct_scalar(loader, node):
    text = Scalar(loader.construct_scalar(node))
    text.style = node.style
    return text


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_scalar)


class _Dumper(yaml.SafeDumper):
    pass


# SafeDumper quotes strings that YAML 1.1 would read as non-strings; also quote
# the ones only YAML 1.2 reads as numbers.
_Dumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"))
_Dumper.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^0o[0-7]+$"), ["0"])


def _represent_scalar(dumper, data):
    text = str(data)
    if data.style is None:
        # Plain in, plain out: tag it as whatever a reader will take it for,
        # so the emitter writes it plain and untagged.
        return yaml.ScalarNode(dumper.resolve(yaml.ScalarNode, text, (True, False)), text)
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=data.style)


_Dumper.add_representer(Scalar, _represent_scalar)


def load(text):
    """Parse a clipboard (str or bytes). Raises ValueError unless it is a mapping."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{e.problem or e.context}{where}") from None
    except yaml.YAMLError as e:
        raise ValueError(" ".join(str(e).split())) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"it is a {type(data).__name__}, not a mapping")
    return data


def dump(clipboard):
    """The clipboard as YAML text, block style, keys in their original order."""
    return yaml.dump(clipboard, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1 << 30)


def flag(value):
    """A YAML boolean read leniently: true/yes/on/1 (any case) are true."""
    return value is True or str(value).strip().lower() in ("true", "yes", "on", "y", "1")


def log(message):
    print(message, file=sys.stderr, flush=True)


class Failure(Exception):
    """Fail the stage: the message is printed as the last stderr line."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


class Skip(Exception):
    """The step does not apply: log 'skipped: ...' and leave the clipboard as it is."""


# --- values from the clipboard, checked before they go into files, names or commands --------
#
# The clipboard comes from a design, which a chat user may have written: a newline in a value
# written to a zone file adds records, ".." as a name written into a path leaves the
# directory. Check every value at the boundary where it leaves the worker.

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


def _shown(value):
    text = repr(str(value))
    return text if len(text) <= 60 else text[:57] + "...'"


def check_hostname(value, what):
    """One RFC 1123 label (loki): letters, digits and '-', 1-63, no '-' at either end."""
    text = str(value)
    if not re.fullmatch(_LABEL, text):
        raise Failure(f"{what} {_shown(value)} is not a host name: use 1-63 letters, digits "
                      "and '-', not starting or ending with '-'", 2)
    return text


def check_dns_name(value, what):
    """A fully qualified RFC 1123 name (loki.example.com, at most 253 characters); a trailing
    dot is dropped. Returned as text."""
    text = str(value)
    name = text[:-1] if text.endswith(".") else text
    if (len(name) > 253 or "." not in name
            or not all(re.fullmatch(_LABEL, label) for label in name.split("."))):
        raise Failure(f"{what} {_shown(value)} is not a DNS name (host.example.com: labels of "
                      "letters, digits and '-', separated by dots)", 2)
    return name


def check_name(value, what):
    """A name safe as one path component: starts with a letter or digit, then letters,
    digits and . _ @ + - (at most 128); never '.', '..', a '/' or a control character."""
    text = str(value)
    if not _NAME.fullmatch(text):
        raise Failure(f"{what} {_shown(value)} is not a safe name: use letters, digits and "
                      "'.', '_', '@', '+', '-', starting with a letter or digit (no '/' or '..')", 2)
    return text


def check_line(value, what, max_length=4096):
    """Text for one line of a file: no newline or other control character."""
    text = str(value)
    if len(text) > max_length or any(ord(c) < 0x20 or ord(c) == 0x7f for c in text):
        raise Failure(f"{what} {_shown(value)} must be one line of text (at most {max_length} "
                      "characters, no newlines or control characters)", 2)
    return text


def check_word(value, what, max_length=256):
    """One field of a whitespace-separated line (fstab, zone data): no spaces either."""
    text = check_line(value, what, max_length)
    if not text or any(c.isspace() for c in text):
        raise Failure(f"{what} {_shown(value)} must be one word (no spaces)", 2)
    return text


def check_ip(value, what, version=None):
    """An IP address (version 4 or 6 if given), in its canonical text."""
    import ipaddress
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        address = None
    if address is None or (version and address.version != version):
        kind = f"an IPv{version}" if version else "an IP"
        raise Failure(f"{what} {_shown(value)} is not {kind} address", 2)
    return str(address)


def check_port(value, what):
    """A TCP/UDP port number, 1-65535."""
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise Failure(f"{what} {_shown(value)} is not a port number (1-65535)", 2)
    return int(text)


def read_secret_file(path, what):
    """The contents of a secret file named in the design or configuration, for a credential.
    Never quoted in errors. The file must be a regular file not readable by others."""
    path = check_line(path, what)
    if not os.path.isabs(path):
        raise Failure(f"{what} must be an absolute path", 2)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise Failure(f"cannot read {what} {path}: {e.strerror}", 2)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        import stat
        if not stat.S_ISREG(st.st_mode):
            raise Failure(f"{what} {path} is not a regular file", 2)
        if st.st_mode & 0o004:
            raise Failure(f"{what} {path} is readable by everyone: chmod o-r it first", 2)
        if st.st_size > 65536:
            raise Failure(f"{what} {path} is too large to be a key or password file", 2)
        return f.read().decode("utf-8", errors="replace")


def duration_seconds(value, what):
    """'90s', '5m', '2h', '1d' or a number of seconds, as seconds."""
    m = re.fullmatch(r"\s*([0-9]+)\s*(ms|s|m|h|d)?\s*", str(value))
    if not m:
        raise Failure(f"{what} {_shown(value)} is not a duration (90s, 5m, 2h)", 2)
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _int_env(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class Worker:
    """One run of a worker: the job's environment and the clipboard."""

    def __init__(self):
        script = os.path.realpath(sys.argv[0])
        default_task = f"{os.path.basename(os.path.dirname(script))}:{os.path.basename(script)}"
        self.task = os.environ.get("JARVIS_TASK") or default_task
        self.module, _, self.name = self.task.partition(":")
        self.job = os.environ.get("JARVIS_JOB") or "manual"
        self.stage = _int_env("JARVIS_STAGE", 1)
        self.stages = _int_env("JARVIS_STAGES", 1)
        self.attempt = _int_env("JARVIS_ATTEMPT", 1)
        self.state_dir = os.environ.get("JARVIS_STATE_DIR")
        self.raw = sys.stdin.buffer.read()
        try:
            self.clipboard = load(self.raw)
        except ValueError as e:
            raise Failure(f"the clipboard on stdin is not a YAML mapping: {e}", 2)
        self.original = copy.deepcopy(self.clipboard)

    log = staticmethod(log)

    def get(self, path, default=None):
        """The value at a dotted path ("instance.ip"), or default."""
        node = self.clipboard
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    def need(self, path, hint=""):
        """The value at a dotted path; fails the stage (exit 2) if it is missing or empty."""
        value = self.get(path)
        if value is None or value == "":
            raise Failure(f"{path} is missing from the clipboard" + (f": {hint}" if hint else ""), 2)
        return value

    def put(self, path, value):
        """Set the value at a dotted path, creating mappings on the way."""
        *parents, last = path.split(".")
        node = self.clipboard
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = value

    @property
    def host(self):
        """instance.hostname (else JARVIS_HOST), checked to be a valid host name."""
        host = str(self.get("instance.hostname") or os.environ.get("JARVIS_HOST") or "")
        if not re.fullmatch(_LABEL, host):
            raise Failure(f"instance.hostname {_shown(host)} is not a valid host name", 2)
        return host

    def fqdn(self, path="instance.fqdn", hint=""):
        """need(path) checked to be a DNS name."""
        return check_dns_name(self.need(path, hint), path)

    def setting(self, path, env=None, default=None):
        """A setting: the design's value at path, else the environment variable env (the
        configuration's workers.env or env_allow), else default. Not for secrets: those come
        from files (see secret_file) or the environment only."""
        value = self.get(path)
        if value is None or value == "":
            value = os.environ.get(env) if env else None
        return default if value is None or value == "" else value

    def simulated(self):
        """True when this host lives in the sandbox's pretend world: instance.provider is
        sandbox and the design gives no sandbox.address (a real machine standing in for the
        sandbox node). Real workers then hand the stage to their sandbox variant."""
        opts = self.get("sandbox")
        address = opts.get("address") if isinstance(opts, dict) else None
        return str(self.get("instance.provider") or "").lower() == "sandbox" and not address

    def exec_sandbox(self, variant):
        """Replace this process with workers/sandbox/<variant>, the simulation of this task,
        giving it the same clipboard on stdin and the same task name (sandbox.fail matches
        it). Never returns."""
        path = os.path.join(os.path.dirname(os.path.realpath(sys.argv[0])), "..", "sandbox",
                            variant)
        path = os.path.realpath(path)
        fd = os.memfd_create("clipboard")
        os.write(fd, self.raw)
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
        os.close(fd)
        os.environ["JARVIS_TASK"] = self.task
        sys.stderr.flush()
        os.execv(path, [path, self.name])

    def prepare(self):
        """Hook run before the task body (subclasses: checks, simulated delays)."""

    def perform(self, body):
        body(self)


def run(body, worker_class=Worker):
    """Run body(worker); print the clipboard if it changed; exit 0 or fail the stage."""
    task = os.environ.get("JARVIS_TASK") or os.path.basename(sys.argv[0])
    try:
        w = worker_class()
        task = w.task
        w.prepare()
        w.perform(body)
    except Skip as s:
        log(f"skipped: {s}")
        sys.exit(0)
    except Failure as f:
        log(str(f))
        sys.exit(f.code)
    except Exception as e:      # a bug: the traceback, then a one-line reason last
        traceback.print_exc()
        log(f"{task}: internal error: {type(e).__name__}: {e}")
        sys.exit(1)
    if w.clipboard != w.original:
        sys.stdout.write(dump(w.clipboard))
        sys.stdout.flush()
