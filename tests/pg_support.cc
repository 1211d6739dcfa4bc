#include "tests/pg_support.h"

#include <libpq-fe.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace jarvis::testing {
namespace fs = std::filesystem;

std::string postgres_bin_dir() {
  std::error_code ec;
  std::string best;
  for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    std::string bin = e.path().string() + "/bin";
    if (fs::exists(bin + "/initdb") && fs::exists(bin + "/pg_ctl") && bin > best) best = bin;
  }
  return best;
}

namespace {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Runs argv (as `nobody` when we are root), its output into `log`; the exit status.
int run(std::vector<std::string> argv, const std::string& log) {
  if (::geteuid() == 0) {
    argv.insert(argv.begin(), {"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"});
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::unique_ptr<PgServer>& instance() {
  static std::unique_ptr<PgServer> server;
  return server;
}

}  // namespace

PgServer* PgServer::shared(std::string* why_not) {
  static std::string reason;
  static bool tried = false;
  if (!tried) {
    tried = true;
    std::unique_ptr<PgServer> s(new PgServer());
    if (s->init(reason)) instance() = std::move(s);
  }
  if (why_not) *why_not = reason;
  return instance().get();
}

bool PgServer::init(std::string& why_not) {
  bin_ = postgres_bin_dir();
  if (bin_.empty()) {
    why_not = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)";
    return false;
  }
  std::string tmpl = (fs::temp_directory_path() / "jarvis-pg-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  if (::geteuid() == 0) {
    passwd* nobody = ::getpwnam("nobody");
    if (!nobody || ::chown(dir_.c_str(), nobody->pw_uid, nobody->pw_gid) != 0) {
      why_not = "cannot give " + dir_ + " to the user nobody to run PostgreSQL as";
      return false;
    }
  }
  std::string pwfile = dir_ + "/pw";
  { std::ofstream(pwfile) << password_ << "\n"; }
  ::chmod(pwfile.c_str(), 0644);
  std::string log = dir_ + "/setup.log";
  if (run({bin_ + "/initdb", "-D", dir_ + "/data", "-U", "jarvis", "--auth=scram-sha-256",
           "--pwfile=" + pwfile, "-E", "UTF8", "--locale=C", "--no-sync"},
          log) != 0) {
    why_not = "initdb failed: " + read_all(log);
    return false;
  }
  port_ = free_port();
  start();
  return true;
}

void PgServer::start() {
  std::string log = dir_ + "/setup.log";
  std::string opts = "-c listen_addresses=127.0.0.1 -p " + std::to_string(port_) +
                     " -c unix_socket_directories=" + dir_ + " -c fsync=off -c max_connections=200";
  if (run({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-l", dir_ + "/server.log", "-o", opts, "-w", "-t", "30", "start"},
          log) != 0)
    throw std::runtime_error("pg_ctl start failed: " + read_all(log) + read_all(dir_ + "/server.log"));
  running_ = true;
}

void PgServer::stop() {
  if (!running_) return;
  run({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-m", "fast", "-w", "stop"}, dir_ + "/setup.log");
  running_ = false;
}

PgServer::~PgServer() {
  stop();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string PgServer::url(const std::string& db) const {
  return "postgresql://jarvis:" + password_ + "@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

std::string PgServer::sql(const std::string& db, const std::string& statement) const {
  PGconn* c = PQconnectdb(url(db).c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c);
    PQfinish(c);
    throw std::runtime_error("cannot connect to the test PostgreSQL: " + msg);
  }
  PGresult* r = PQexec(c, statement.c_str());
  auto st = PQresultStatus(r);
  std::string out;
  if (st == PGRES_TUPLES_OK && PQntuples(r) > 0) out = PQgetvalue(r, 0, 0);
  std::string msg = PQerrorMessage(c);
  PQclear(r);
  PQfinish(c);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw std::runtime_error(statement + ": " + msg);
  return out;
}

std::string PgServer::create_database() {
  std::string name = "t" + std::to_string(::getpid()) + "_" + std::to_string(++databases_);
  sql("postgres", "CREATE DATABASE " + name);
  return url(name);
}

}  // namespace jarvis::testing
