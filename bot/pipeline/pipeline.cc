#include "bot/pipeline/pipeline.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>


#include "bot/util/yaml_doc.h"
#include "bot/util/text.h"

namespace jarvis {
namespace {

bool is_name_part(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!ok(s[0])) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return ok(c) || c == '_' || c == '-'; });
}

// Collects "file:line: message" for one file.
struct Reporter {
  const std::string& file;
  std::vector<std::string>& errors;
  bool failed = false;
  void at(const YAML::Node& n, const std::string& what) {
    errors.push_back(file + ":" + std::to_string(n.Mark().line + 1) + ": " + what);
    failed = true;
  }
  void at_line(int line, const std::string& what) {
    errors.push_back(file + ":" + std::to_string(line) + ": " + what);
    failed = true;
  }
};

std::optional<TaskSpec> parse_task(const YAML::Node& n, const PipelineDefaults& defaults,
                                   Reporter& report) {
  TaskSpec spec;
  spec.timeout = defaults.timeout;
  if (n.IsScalar()) {
    spec.name = n.Scalar();
  } else if (n.IsMap()) {
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      YAML::Node v = it->second;  // a copy: the iterator hands out a temporary
      if (key == "task") {
        if (!v.IsScalar()) { report.at(v, "task must be a string like module:task"); continue; }
        spec.name = v.Scalar();
      } else if (key == "timeout") {
        auto d = v.IsScalar() ? parse_duration(v.Scalar()) : std::nullopt;
        if (!d || d->count() == 0) {
          report.at(v, "timeout must be a duration like 500ms, 30s, 5m or 1h");
          continue;
        }
        spec.timeout = *d;
      } else if (key == "retries") {
        int r = -1;
        try { r = v.as<int>(); } catch (const YAML::Exception&) {}
        if (r < 0 || r > 20) { report.at(v, "retries must be a whole number from 0 to 20"); continue; }
        spec.retries = r;
      } else if (key == "destructive") {
        try { spec.destructive = v.as<bool>(); }
        catch (const YAML::Exception&) { report.at(v, "destructive must be true or false"); }
      } else {
        report.at(it->first, "unknown task key '" + key +
                                 "' (expected task, timeout, retries, destructive)");
      }
    }
    if (!n["task"]) { report.at(n, "a task mapping needs 'task: module:task'"); return std::nullopt; }
  } else {
    report.at(n, "a task is a string module:task or a mapping with 'task'");
    return std::nullopt;
  }
  if (!is_valid_task_name(spec.name)) {
    report.at(n, "'" + spec.name + "' is not a task name: expected module:task in lower case "
                 "letters, digits, '_' and '-'");
    return std::nullopt;
  }
  return spec;
}

}  // namespace

bool is_valid_task_name(std::string_view name) {
  auto colon = name.find(':');
  if (colon == std::string_view::npos) return false;
  return is_name_part(name.substr(0, colon)) && is_name_part(name.substr(colon + 1));
}

bool Pipeline::matches(const YAML::Node& design) const {
  for (const auto& [key, want] : match) {
    std::string path = key.find('.') == std::string::npos ? "instance." + key : key;
    auto have = scalar_at(design, path);
    if (!have || lower(*have) != lower(want)) return false;
  }
  return true;
}

std::optional<Pipeline> PipelineSet::load_file(const std::string& path,
                                               const PipelineDefaults& defaults,
                                               std::vector<std::string>& errors) {
  Reporter report{path, errors};
  std::ifstream in(path, std::ios::binary);
  if (!in) { report.at_line(0, "cannot read the file"); return std::nullopt; }
  std::stringstream buf;
  buf << in.rdbuf();
  YamlLimits limits;
  limits.max_bytes = 1u << 20;
  YAML::Node doc;
  try {
    doc = load_mapping_document(buf.str(), limits);
  } catch (const std::exception& e) {
    // The reason starts with "line N, column M: ..."; keep the file:line shape.
    std::string what = e.what();
    int line = 1;
    if (what.rfind("line ", 0) == 0) {
      line = std::atoi(what.c_str() + 5);
      auto colon = what.find(": ");
      if (colon != std::string::npos) what = what.substr(colon + 2);
    }
    report.at_line(line, what);
    return std::nullopt;
  }

  Pipeline p;
  p.file = path;
  std::string stem = std::filesystem::path(path).stem().string();
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
    YAML::Node v = it->second;  // a copy: the iterator hands out a temporary
    if (key == "name") {
      if (!v.IsScalar() || !is_name_part(v.Scalar())) {
        report.at(v, "name must be lower case letters, digits, '_' and '-'");
      } else if (v.Scalar() != stem) {
        report.at(v, "name '" + v.Scalar() + "' differs from the file name '" + stem + "'");
      } else {
        p.name = v.Scalar();
      }
    } else if (key == "description") {
      if (!v.IsScalar()) report.at(v, "description must be text");
      else p.description = v.Scalar();
    } else if (key == "match") {
      if (!v.IsMap()) { report.at(v, "match must be a mapping of design field: value"); continue; }
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m->first.IsScalar() || !m->second.IsScalar()) {
          report.at(m->first, "match entries must be field: value");
          continue;
        }
        p.match.emplace_back(m->first.Scalar(), m->second.Scalar());
      }
    } else if (key == "tasks") {
      if (!v.IsSequence() || v.size() == 0) { report.at(v, "tasks must be a non-empty list"); continue; }
      for (const auto& t : v)
        if (auto spec = parse_task(t, defaults, report)) p.tasks.push_back(std::move(*spec));
    } else {
      report.at(it->first, "unknown key '" + key + "' (expected name, description, match, tasks)");
    }
  }
  if (!doc["name"]) report.at(doc, "missing 'name'");
  if (!doc["tasks"]) report.at(doc, "missing 'tasks'");
  if (report.failed) return std::nullopt;
  return p;
}

PipelineSet PipelineSet::load_dir(const std::string& dir, const PipelineDefaults& defaults,
                                  std::vector<std::string>& errors) {
  PipelineSet set;
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    auto ext = entry.path().extension();
    if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml"))
      files.push_back(entry.path().string());
  }
  if (ec) {
    errors.push_back(dir + ":0: cannot read the pipelines directory: " + ec.message());
    return set;
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    auto p = load_file(f, defaults, errors);
    if (!p) continue;
    if (set.find(p->name)) {
      errors.push_back(f + ":1: a pipeline named '" + p->name + "' is already defined");
      continue;
    }
    set.pipelines_.push_back(std::move(*p));
  }
  return set;
}

const Pipeline* PipelineSet::find(std::string_view name) const {
  for (const auto& p : pipelines_)
    if (p.name == name) return &p;
  return nullptr;
}

const Pipeline* PipelineSet::select(const YAML::Node& design,
                                    const std::optional<std::string>& name,
                                    std::string& error) const {
  if (name) {
    if (const Pipeline* p = find(*name)) return p;
    error = "there is no pipeline named '" + *name + "'";
    return nullptr;
  }
  // Only pipelines with a `match` are chosen automatically: a design must not fall into a
  // generic pipeline by accident. The most specific match wins; a tie is an error.
  const Pipeline* best = nullptr;
  std::vector<std::string> tied;
  for (const auto& p : pipelines_) {
    if (p.match.empty() || !p.matches(design)) continue;
    if (!best || p.match.size() > best->match.size()) {
      best = &p;
      tied = {p.name};
    } else if (p.match.size() == best->match.size()) {
      tied.push_back(p.name);
    }
  }
  if (tied.size() > 1) {
    error = "pipelines ";
    for (size_t i = 0; i < tied.size(); ++i) error += (i ? " and " : "") + tied[i];
    error += " all match this design; name one with --pipeline";
    return nullptr;
  }
  if (!best) {
    auto provider = scalar_at(design, "instance.provider");
    error = "no pipeline matches this design (instance.provider is " +
            (provider ? "'" + *provider + "'" : std::string("not set")) +
            "); name one with --pipeline";
  }
  return best;
}

std::string PipelineSet::explain(const Pipeline& chosen, const YAML::Node& design,
                                 const std::optional<std::string>& name) const {
  if (name) return "pipeline " + chosen.name + " named with --pipeline (or \"with " + chosen.name + "\")";
  std::string why = "chosen because ";
  // The pipeline's own value, not the design's: they are equal but for case, and a design
  // from a gist or LDAP is not echoed.
  for (size_t i = 0; i < chosen.match.size(); ++i) {
    const auto& [key, want] = chosen.match[i];
    std::string path = key.find('.') == std::string::npos ? "instance." + key : key;
    why += (i ? " and " : "") + path + " is '" + want + "'";
  }
  why += " (match of " + chosen.name + ")";
  std::vector<std::string> others;
  for (const auto& p : pipelines_)
    if (&p != &chosen && !p.match.empty() && p.matches(design)) others.push_back(p.name);
  if (!others.empty()) {
    why += "; ";
    for (size_t i = 0; i < others.size(); ++i) why += (i ? ", " : "") + others[i];
    why += others.size() == 1 ? " matches too, less specifically" : " match too, less specifically";
  }
  return why;
}

}  // namespace jarvis
