#include "bot/design/url_design_source.h"

#include <algorithm>

#include <boost/asio/post.hpp>

#include "bot/util/log.h"
#include "bot/util/json.h"
#include "bot/util/text.h"

namespace jarvis {
namespace {

constexpr size_t kMaxUrl = 2048;

bool all_of_chars(std::string_view s, std::string_view extra) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [&](unsigned char c) {
    return std::isalnum(c) || extra.find(static_cast<char>(c)) != std::string_view::npos;
  });
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// GitHub's anchor for one file of a gist: "#file-" + the name lower-cased, other characters
// as '-' ("Loki.yaml" -> "loki-yaml").
std::string anchor_slug(const std::string& name) {
  std::string s = lower(name);
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '-';
  return s;
}

std::string short_ref(const std::string& ref) { return ref.substr(0, 120); }

}  // namespace

UrlDesignSource::UrlDesignSource(HttpClient& http, GistConfig config)
    : http_(http), config_(std::move(config)) {
  while (!config_.api_url.empty() && config_.api_url.back() == '/') config_.api_url.pop_back();
  for (auto& h : config_.gist_hosts) h = lower(h);
  for (auto& h : config_.url_hosts) h = lower(h);
}

bool UrlDesignSource::handles(const std::string& ref) const {
  return ref.rfind("https://", 0) == 0 || ref.rfind("http://", 0) == 0;
}

std::optional<UrlTarget> UrlDesignSource::target(const std::string& ref, std::string& error) const {
  if (ref.size() > kMaxUrl) {
    error = "the URL is longer than " + std::to_string(kMaxUrl) + " characters";
    return std::nullopt;
  }
  if (std::any_of(ref.begin(), ref.end(), [](unsigned char c) { return c <= ' ' || c == 0x7f; })) {
    error = "the URL has spaces or control characters";
    return std::nullopt;
  }
  std::string rest;
  if (ref.rfind("https://", 0) == 0) {
    rest = ref.substr(8);
  } else if (ref.rfind("http://", 0) == 0 && config_.allow_http) {
    rest = ref.substr(7);
  } else {
    error = "only https:// URLs are allowed";
    return std::nullopt;
  }
  UrlTarget t;
  size_t path_at = rest.find_first_of("/?#");
  std::string authority = rest.substr(0, path_at);
  std::string path = path_at == std::string::npos ? "/" : rest.substr(path_at);
  if (authority.find('@') != std::string::npos) {
    error = "URLs with a user name or password are not accepted (use gist.token_file)";
    return std::nullopt;
  }
  t.host = lower(authority.substr(0, authority.rfind(':') == std::string::npos ||
                                             authority.back() == ']'
                                         ? authority.size()
                                         : authority.rfind(':')));
  if (t.host.empty()) {
    error = "the URL names no host";
    return std::nullopt;
  }
  std::string fragment;
  if (auto hash = path.find('#'); hash != std::string::npos) {
    fragment = path.substr(hash + 1);
    path.resize(hash);
  }

  if (contains(config_.gist_hosts, t.host)) {
    // https://gist.github.com/<id>, /<user>/<id>, and GitHub Enterprise's /gist/<user>/<id>.
    std::string p = path;
    if (p.find('?') != std::string::npos) p.resize(p.find('?'));
    if (p.rfind("/gist/", 0) == 0) p = p.substr(5);
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    std::vector<std::string> parts;
    for (size_t i = 1; i <= p.size();) {
      size_t slash = p.find('/', i);
      if (slash == std::string::npos) slash = p.size();
      parts.push_back(p.substr(i, slash - i));
      i = slash + 1;
    }
    bool shaped = (parts.size() == 1 || (parts.size() == 2 && parts[0].size() <= 39 &&
                                         all_of_chars(parts[0], "-"))) &&
                  parts.back().size() <= 64 && all_of_chars(parts.back(), "");
    if (!shaped) {
      error = "'" + short_ref(ref) + "' is not a gist URL (https://" + t.host + "/<id> or /<user>/<id>)";
      return std::nullopt;
    }
    t.gist = true;
    t.gist_id = parts.back();
    if (fragment.rfind("file-", 0) == 0) t.file_hint = lower(fragment.substr(5));
    t.url = config_.api_url + "/gists/" + t.gist_id;
    return t;
  }
  if (!contains(config_.url_hosts, t.host)) {
    error = "host " + t.host + " is not one jarvis fetches designs from (gist.url_hosts)";
    return std::nullopt;
  }
  t.url = ref.substr(0, ref.find('#'));
  return t;
}

HttpRequest UrlDesignSource::request_for(const UrlTarget& t) const {
  HttpRequest r;
  r.url = t.url;
  r.ca_file = config_.ca_file;
  r.timeout = config_.timeout;
  r.max_redirects = config_.max_redirects;
  r.allow_http = config_.allow_http;
  if (t.gist) {
    // The API answer holds every file of the gist, each up to GitHub's 1 MB inline limit.
    r.max_bytes = config_.max_bytes * 4 + 64 * 1024;
    r.headers = {"Accept: application/vnd.github+json", "X-GitHub-Api-Version: 2022-11-28"};
    if (!config_.token.empty()) r.headers.push_back("Authorization: Bearer " + config_.token);
  } else {
    r.max_bytes = config_.max_bytes;
  }
  return r;
}

std::optional<std::string> UrlDesignSource::design_from_gist(const std::string& json,
                                                             const UrlTarget& t, std::string& file,
                                                             std::string& error) const {
  YAML::Node root;
  try {
    root = parse_json_object(json, config_.max_bytes * 4 + 64 * 1024);
  } catch (const std::exception& e) {
    error = "the gist API's answer is not JSON jarvis understands: " + std::string(e.what());
    return std::nullopt;
  }
  const YAML::Node files = root["files"];
  if (!files || !files.IsMap() || files.size() == 0) {
    error = "gist " + t.gist_id + " has no files";
    return std::nullopt;
  }
  std::vector<std::string> names;
  for (auto it = files.begin(); it != files.end(); ++it) names.push_back(it->first.Scalar());
  std::string chosen;
  if (!t.file_hint.empty()) {
    for (const auto& n : names)
      if (anchor_slug(n) == t.file_hint) chosen = n;
    if (chosen.empty()) {
      error = "gist " + t.gist_id + " has no file for #file-" + t.file_hint;
      return std::nullopt;
    }
  } else if (names.size() == 1) {
    chosen = names[0];
  } else {
    for (const auto& preferred : config_.design_files)
      for (const auto& n : names)
        if (chosen.empty() && lower(n) == preferred) chosen = n;
    if (chosen.empty()) {
      std::string listed;
      for (size_t i = 0; i < names.size() && i < 10; ++i) listed += (i ? ", " : "") + names[i];
      if (names.size() > 10) listed += ", ...";
      error = "gist " + t.gist_id + " has " + std::to_string(names.size()) + " files (" + listed +
              ") and none is named " + config_.design_files.front() +
              "; name the design file so, or add #file-<name> to the URL";
      return std::nullopt;
    }
  }
  file = chosen;
  const YAML::Node entry = files[chosen];
  const YAML::Node content = entry["content"];
  bool truncated = entry["truncated"] && entry["truncated"].IsScalar() && entry["truncated"].Scalar() == "true";
  size_t size = 0;
  try {
    if (entry["size"]) size = entry["size"].as<size_t>();
  } catch (const YAML::Exception&) {}
  if (truncated || size > config_.max_bytes) {
    error = "gist " + t.gist_id + " file " + chosen + " is too big: " +
            (size ? std::to_string(size) + " bytes, " : std::string()) + "over the " +
            std::to_string(config_.max_bytes) + "-byte limit for designs";
    return std::nullopt;
  }
  if (!content || !content.IsScalar()) {
    error = "gist " + t.gist_id + " file " + chosen + " has no content";
    return std::nullopt;
  }
  return content.Scalar();
}

void UrlDesignSource::fetch(const std::string& ref, Done done) {
  std::string error;
  auto t = target(ref, error);
  if (!t) {
    // Same contract as a fetch: the answer comes later, from the loop.
    boost::asio::post(http_.io(), [done, error] { done(std::nullopt, error); });
    return;
  }
  log::info(log::kNoJob, "design: fetching {} ({})", short_ref(ref), t->gist ? "gist API" : "URL");
  http_.fetch(request_for(*t), [this, ref, t = *t, done](HttpResponse r) {
    std::string what = t.gist ? "gist " + t.gist_id : short_ref(ref);
    if (!r.error.empty()) {
      done(std::nullopt, "cannot fetch " + what + ": " + r.error);
      return;
    }
    if (r.status == 404) {
      done(std::nullopt, t.gist ? "gist " + t.gist_id + " not found (or it is secret and the token cannot see it)"
                                : short_ref(ref) + " not found (HTTP 404)");
      return;
    }
    if (r.status == 401 || (r.status == 403 && !r.retry_after_s)) {
      done(std::nullopt, "cannot fetch " + what + ": HTTP " + std::to_string(r.status) +
                             (t.gist ? " (check gist.token_env / gist.token_file)" : ""));
      return;
    }
    if (r.status == 429 || r.status == 403) {
      done(std::nullopt, "cannot fetch " + what + ": rate limited; try again in " +
                             std::to_string(r.retry_after_s.value_or(60)) + "s");
      return;
    }
    if (r.status < 200 || r.status >= 300) {
      done(std::nullopt, "cannot fetch " + what + ": HTTP " + std::to_string(r.status));
      return;
    }
    std::string text = std::move(r.body), file, error;
    if (t.gist) {
      auto content = design_from_gist(text, t, file, error);
      if (!content) {
        done(std::nullopt, error);
        return;
      }
      text = std::move(*content);
    }
    auto design = parse_design(ref, std::move(text), error);
    if (!design) {
      done(std::nullopt, what + (file.empty() ? "" : " (" + file + ")") + ": " + error);
      return;
    }
    done(std::move(design), {});
  });
}

}  // namespace jarvis
