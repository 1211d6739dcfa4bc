"""A real PostgreSQL for the end-to-end tests: Debian's initdb and pg_ctl in a temp dir on a
loopback port, password authentication (scram-sha-256). As root (CI) it runs as `nobody`, since
PostgreSQL refuses to run as root. Exit 77 (skip) only when the binaries are absent."""
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile

PASSWORD = "it-pg-secret-4b1d"


def bin_dir():
    found = sorted(d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{d}/initdb"))
    return found[-1] if found else None


def as_postgres_user(argv):
    if os.geteuid() == 0:
        return ["/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv]
    return argv


class Postgres:
    def __init__(self, durable=False):
        """durable: PostgreSQL's own defaults (fsync and synchronous_commit on), for benchmarks;
        otherwise fsync=off, as tests only need the server's behaviour, not its disk."""
        self.durable = durable
        self.bin = bin_dir()
        if not self.bin:
            print("SKIP: PostgreSQL is not installed (apt-get install postgresql)")
            sys.exit(77)
        self.dir = tempfile.mkdtemp(prefix="jarvis-pg-it-")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "nobody", "nogroup")
        pw = f"{self.dir}/pw"
        with open(pw, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(pw, 0o644)
        self._run([f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "jarvis",
                   "--auth=scram-sha-256", f"--pwfile={pw}", "-E", "UTF8", "--locale=C", "--no-sync"])
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.running = False
        self.start()

    def _run(self, argv):
        p = subprocess.run(as_postgres_user(argv), capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {p.stdout}{p.stderr}")
        return p

    def start(self):
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
                + ("" if self.durable else "-c fsync=off ") + "-c max_connections=200")
        self._run([f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/server.log",
                   "-o", opts, "-w", "-t", "60", "start"])
        self.running = True

    def stop(self, mode="fast"):
        if self.running:
            self._run([f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m", mode, "-w", "stop"])
            self.running = False

    def url(self, db="postgres"):
        return f"postgresql://jarvis:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def sql(self, statement, db="postgres"):
        """psql as the superuser; the first column of the result rows, as text lines."""
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        p = subprocess.run([f"{self.bin}/psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "jarvis", "-d", db, "-v", "ON_ERROR_STOP=1", "-c", statement],
                           capture_output=True, text=True, timeout=60, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {p.stderr}")
        return p.stdout.strip()

    def create_database(self, name):
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def write_url_file(self, path, db):
        """The url_file a node's config names: the URL with the password, mode 0600."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.url(db) + "\n")
        return path

    def cleanup(self):
        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001 - best effort at the end of a test
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
