#pragma once
// A real PostgreSQL for the tests: Debian's initdb and pg_ctl in a temp dir, on a loopback port,
// password authentication (scram-sha-256) as a real deployment has it. Run as `nobody` when the
// tests run as root (CI does; PostgreSQL refuses to run as root). Absent binaries: skip.
#include <memory>
#include <string>

namespace jarvis::testing {

class PgServer {
 public:
  // The server of this test process, started on first use; nullptr (and why) when PostgreSQL
  // is not installed or cannot start here.
  static PgServer* shared(std::string* why_not = nullptr);
  ~PgServer();

  // A new, empty database; its libpq URL (with the password, as the url_file would hold it).
  std::string create_database();
  std::string url(const std::string& db) const;
  // Runs SQL as the superuser on `db` (simple query protocol); throws with the server's
  // message on failure.
  std::string sql(const std::string& db, const std::string& statement) const;
  void stop();   // fast shutdown: open connections are closed by the server
  void start();
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }

 private:
  PgServer() = default;
  bool init(std::string& why_not);
  std::string bin_, dir_, password_ = "pg-test-secret-7f3a";
  int port_ = 0;
  int databases_ = 0;
  bool running_ = false;
};

// Where initdb lives (/usr/lib/postgresql/<v>/bin), or empty.
std::string postgres_bin_dir();

}  // namespace jarvis::testing
