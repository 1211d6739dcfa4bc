#include "bot/app/config.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>


#include "bot/pipeline/worker_path.h"
#include "bot/util/yaml_doc.h"

namespace jarvis {
namespace fs = std::filesystem;

namespace {

std::string absolute(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

[[noreturn]] void fail(const std::string& file, const YAML::Node& n, const std::string& what) {
  throw std::runtime_error(file + ":" + std::to_string(n.Mark().line + 1) + ": " + what);
}

std::string text(const std::string& file, const YAML::Node& n, const char* key) {
  if (!n.IsScalar()) fail(file, n, std::string(key) + " must be text");
  return n.Scalar();
}

Millis duration(const std::string& file, const YAML::Node& n, const char* key) {
  auto d = n.IsScalar() ? parse_duration(n.Scalar()) : std::nullopt;
  if (!d) fail(file, n, std::string(key) + " must be a duration like 500ms, 30s, 5m");
  return *d;
}

int64_t number(const std::string& file, const YAML::Node& n, const char* key, int64_t lo, int64_t hi) {
  int64_t v = lo - 1;
  try { v = n.as<int64_t>(); } catch (const YAML::Exception&) {}
  if (v < lo || v > hi)
    fail(file, n, std::string(key) + " must be a whole number from " + std::to_string(lo) +
                      " to " + std::to_string(hi));
  return v;
}

std::vector<std::string> strings(const std::string& file, const YAML::Node& n, const char* key) {
  if (!n.IsSequence()) fail(file, n, std::string(key) + " must be a list");
  std::vector<std::string> out;
  for (const auto& item : n) out.push_back(text(file, item, key));
  return out;
}

log::Format parse_log_format(const std::string& v) {
  if (v == "text") return log::Format::Text;
  if (v == "json") return log::Format::Json;
  throw std::runtime_error("log format must be text or json, not '" + v + "'");
}

void apply_workers(const std::string& file, const YAML::Node& w, Config& c) {
  if (!w.IsMap()) fail(file, w, "workers must be a mapping");
  for (auto it = w.begin(); it != w.end(); ++it) {
    std::string key = it->first.Scalar();
    YAML::Node v = it->second;  // a copy: the iterator hands out a temporary
    if (key == "path") {
      c.workers_path.clear();
      for (const auto& p : strings(file, v, "workers.path")) c.workers_path.push_back(p);
    } else if (key == "env_allow") {
      c.env_allow = strings(file, v, "workers.env_allow");
    } else if (key == "env") {
      if (!v.IsMap()) fail(file, v, "workers.env must be a mapping of NAME: value");
      for (auto e = v.begin(); e != v.end(); ++e) {
        std::string name = e->first.Scalar();
        std::erase_if(c.env_set, [&](const std::string& s) { return s.rfind(name + "=", 0) == 0; });
        c.env_set.push_back(name + "=" + text(file, e->second, "workers.env"));
      }
    } else if (key == "default_timeout") {
      c.default_timeout = duration(file, v, "workers.default_timeout");
      if (c.default_timeout.count() == 0) fail(file, v, "workers.default_timeout must be more than 0");
    } else if (key == "kill_grace") {
      c.process.kill_grace = duration(file, v, "workers.kill_grace");
    } else if (key == "output_cap_bytes") {
      c.process.stdout_cap = static_cast<size_t>(number(file, v, "workers.output_cap_bytes", 1024, 1LL << 30));
    } else if (key == "stderr_line_max") {
      c.process.stderr_line_max = static_cast<size_t>(number(file, v, "workers.stderr_line_max", 80, 1 << 20));
    } else if (key == "stderr_lines_max") {
      c.process.stderr_lines_max = static_cast<size_t>(number(file, v, "workers.stderr_lines_max", 10, 1 << 20));
    } else if (key == "retry_backoff") {
      c.retry_backoff = duration(file, v, "workers.retry_backoff");
    } else {
      fail(file, it->first, "unknown key workers." + key);
    }
  }
}

// A variable both passed through and set would reach workers twice, with a value that
// depends on their libc; refuse the ambiguity.
void check_env(const std::string& file, const YAML::Node& workers, const Config& c) {
  for (const auto& name : c.env_allow)
    for (const auto& set : c.env_set)
      if (set.rfind(name + "=", 0) == 0)
        fail(file, workers, "workers.env and workers.env_allow both name " + name);
}

void apply_file(const std::string& file, Config& c) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(file + ":0: cannot read the config file");
  std::stringstream buf;
  buf << in.rdbuf();
  YAML::Node doc;
  try {
    doc = load_mapping_document(buf.str(), YamlLimits{});
  } catch (const std::exception& e) {
    throw std::runtime_error(file + ": " + e.what());
  }
  fs::path base = fs::path(file).parent_path();
  auto rel = [&](const std::string& p) { return fs::path(p).is_absolute() ? p : (base / p).string(); };
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    std::string key = it->first.Scalar();
    YAML::Node v = it->second;  // a copy: the iterator hands out a temporary
    if (key == "state_dir") c.state_dir = rel(text(file, v, "state_dir"));
    else if (key == "pipelines_dir") c.pipelines_dir = rel(text(file, v, "pipelines_dir"));
    else if (key == "designs_dir") c.designs_dir = rel(text(file, v, "designs_dir"));
    else if (key == "max_running_jobs") c.max_running_jobs = static_cast<int>(number(file, v, "max_running_jobs", 1, 100000));
    else if (key == "log_format") c.log_format = parse_log_format(text(file, v, "log_format"));
    else if (key == "secret_patterns") {
      c.secret_patterns = strings(file, v, "secret_patterns");
      if (c.secret_patterns.empty()) fail(file, v, "secret_patterns must name at least one pattern");
    }
    else if (key == "workers") {
      apply_workers(file, v, c);
      check_env(file, v, c);
      for (auto& p : c.workers_path) p = rel(p);
    } else {
      fail(file, it->first, "unknown key '" + key + "'");
    }
  }
}

}  // namespace

EngineConfig Config::engine_config() const {
  EngineConfig e;
  e.workers_path = workers_path;
  e.state_dir = state_dir;
  e.max_running = max_running_jobs;
  e.env_allow = env_allow;
  e.env_set = env_set;
  e.output_limits.max_bytes = process.stdout_cap;
  e.retry_backoff = retry_backoff;
  e.secret_patterns = SecretPatterns(secret_patterns);
  return e;
}

Config load_config(const ConfigOverrides& o) {
  Config c;
  if (o.config_file) apply_file(*o.config_file, c);
  if (o.state_dir) c.state_dir = *o.state_dir;
  if (o.workers_path) c.workers_path = split_search_path(*o.workers_path);
  if (o.pipelines_dir) c.pipelines_dir = *o.pipelines_dir;
  if (o.log_format) c.log_format = parse_log_format(*o.log_format);
  c.state_dir = absolute(c.state_dir);
  c.pipelines_dir = absolute(c.pipelines_dir);
  c.designs_dir = absolute(c.designs_dir);
  for (auto& p : c.workers_path) p = absolute(p);
  return c;
}

}  // namespace jarvis
