#include "bot/design/url_design_source.h"

#include <algorithm>

#include <boost/asio/post.hpp>

#include "bot/util/log.h"
#include "bot/util/json.h"
#include "bot/util/text.h"
#include "bot/util/url_redact.h"

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

// The ref as replies, logs and job records show it: cut, and without credentials.
std::string short_ref(const std::string& ref) { return redact_url_credentials(ref.substr(0, 120)); }

long default_port(const std::string& scheme) { return scheme == "http" ? 80 : 443; }

// "host", "host:port", "[v6]", "[v6]:port" from gist.url_hosts; port 0: the scheme's default.
std::pair<std::string, long> host_entry(const std::string& entry) {
  std::string e = lower(entry);
  if (!e.empty() && e.front() == '[') {
    auto close = e.find(']');
    std::string host = e.substr(1, close == std::string::npos ? std::string::npos : close - 1);
    long port = close != std::string::npos && close + 1 < e.size() && e[close + 1] == ':'
                    ? std::strtol(e.c_str() + close + 2, nullptr, 10) : 0;
    return {host, port};
  }
  auto colon = e.find(':');
  if (colon != std::string::npos && e.find(':', colon + 1) == std::string::npos)
    return {e.substr(0, colon), std::strtol(e.c_str() + colon + 1, nullptr, 10)};
  return {e, 0};
}

std::string host_port(const UrlParts& p) {
  std::string h = p.host.find(':') != std::string::npos ? "[" + p.host + "]" : p.host;
  return p.port == default_port(p.scheme) ? h : h + ":" + std::to_string(p.port);
}

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
  // Raw URLs: the host and port as curl reads them, since curl is what connects.
  t.url = ref.substr(0, ref.find('#'));
  auto parts = parse_url(t.url);
  if (!parts || parts->has_userinfo) {
    error = "'" + short_ref(ref) + "' is not a URL jarvis can read";
    return std::nullopt;
  }
  t.host = parts->host;
  t.port = parts->port;
  if (!url_host_allowed(*parts)) {
    error = "host " + host_port(*parts) + " is not one jarvis fetches designs from (gist.url_hosts)";
    return std::nullopt;
  }
  return t;
}

bool UrlDesignSource::url_host_allowed(const UrlParts& p) const {
  if (p.scheme != "https" && !(p.scheme == "http" && config_.allow_http)) return false;
  for (const auto& entry : config_.url_hosts) {
    auto [host, port] = host_entry(entry);
    if (host == p.host && (port ? port : default_port(p.scheme)) == p.port) return true;
  }
  return false;
}

size_t UrlDesignSource::max_bytes_of(const UrlTarget& t) const {
  return t.gist ? config_.max_bytes * 4 + 64 * 1024 : config_.max_bytes;
}

HttpRequest UrlDesignSource::request_for(const UrlTarget& t) const {
  HttpRequest r;
  r.url = t.url;
  r.ca_file = config_.ca_file;
  r.timeout = config_.timeout;
  r.max_redirects = config_.max_redirects;
  r.allow_http = config_.allow_http;
  r.refuse_private_addresses = !config_.allow_private_addresses;
  // Every hop is checked, the first URL included: redirects stay on the API's host and port
  // for gists, among gist.url_hosts for raw URLs.
  if (t.gist) {
    auto api = parse_url(config_.api_url);
    r.check_url = [api, allow_http = config_.allow_http](const UrlParts& p) -> std::string {
      if (p.scheme != "https" && !(p.scheme == "http" && allow_http)) return p.scheme + ":// is not allowed";
      if (p.has_userinfo) return "the URL has a user name or password";
      if (!api || p.host != api->host || p.port != api->port)
        return host_port(p) + " is not the gist API's host (gist.api_url)";
      return {};
    };
  } else {
    r.check_url = [this](const UrlParts& p) -> std::string {
      if (p.has_userinfo) return "the URL has a user name or password";
      if (!url_host_allowed(p)) return host_port(p) + " is not in gist.url_hosts";
      return {};
    };
  }
  if (t.gist) {
    // The API answer holds every file of the gist, each up to GitHub's 1 MB inline limit.
    r.max_bytes = max_bytes_of(t);
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
  // The answer is untrusted: every shape is checked before it is read, and anything yaml-cpp
  // still throws is caught here, never let out into the completion handler.
  try {
    return pick_from_gist(json, t, file, error);
  } catch (const std::exception& e) {
    log::warn(log::kNoJob, "design: gist {}: unexpected API answer: {}", t.gist_id, e.what());
    error = "gist " + t.gist_id + ": the gist API answer was not understood";
    return std::nullopt;
  }
}

std::optional<std::string> UrlDesignSource::pick_from_gist(const std::string& json,
                                                           const UrlTarget& t, std::string& file,
                                                           std::string& error) const {
  const std::string not_understood = "gist " + t.gist_id + ": the gist API answer was not understood";
  YAML::Node parsed;
  try {
    parsed = parse_json_object(json, config_.max_bytes * 4 + 64 * 1024);
  } catch (const std::exception& e) {
    log::warn(log::kNoJob, "design: gist {}: the API answer is not JSON: {}", t.gist_id, e.what());
    error = not_understood + " (not JSON)";
    return std::nullopt;
  }
  const YAML::Node& root = parsed;
  if (!root.IsMap()) {
    error = not_understood;
    return std::nullopt;
  }
  const YAML::Node files = root["files"];
  if (files && !files.IsMap()) {
    log::warn(log::kNoJob, "design: gist {}: 'files' is not an object", t.gist_id);
    error = not_understood;
    return std::nullopt;
  }
  if (!files || files.size() == 0) {
    error = "gist " + t.gist_id + " has no files";
    return std::nullopt;
  }
  std::vector<std::string> names;
  for (auto it = files.begin(); it != files.end(); ++it) {
    // Each file: a name and an object with its content, as GitHub documents it.
    if (!it->first.IsScalar() || it->first.Scalar().empty() || !it->second.IsMap()) {
      log::warn(log::kNoJob, "design: gist {}: a 'files' entry is not a name and an object", t.gist_id);
      error = not_understood;
      return std::nullopt;
    }
    names.push_back(it->first.Scalar());
  }
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
      // The names are not listed: the gist may be secret, read with the bot's token.
      error = "gist " + t.gist_id + " has " + std::to_string(names.size()) + " files and none is named " +
              config_.design_files.front() + "; name the design file so, or add #file-<name> to the URL";
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
    error = "gist " + t.gist_id + ": the design file is too big: over the " +
            std::to_string(config_.max_bytes) + "-byte limit for designs";
    return std::nullopt;
  }
  if (!content || !content.IsScalar()) {
    error = "gist " + t.gist_id + ": the design file has no content";
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
    // Nothing the server sent may throw out of this handler (it would end serve).
    std::string error;
    std::optional<Design> design;
    try {
      design = answer(ref, t, std::move(r), error);
    } catch (const std::exception& e) {
      log::error(log::kNoJob, "design: {}: unexpected failure reading the answer: {}", short_ref(ref), e.what());
      design.reset();
      error = "cannot fetch " + (t.gist ? "gist " + t.gist_id : short_ref(ref)) +
              ": the answer was not understood";
    }
    done(std::move(design), std::move(error));
  });
}

std::optional<Design> UrlDesignSource::answer(const std::string& ref, const UrlTarget& t,
                                              HttpResponse r, std::string& error) const {
  std::string what = t.gist ? "gist " + t.gist_id : short_ref(ref);
  if (!r.error.empty()) {
    // The details (addresses, ports, curl's words) go to the log only: in chat they would
    // map the bot's network for whoever asks.
    log::warn(log::kNoJob, "design: cannot fetch {} ({} redirects followed): {}", short_ref(ref),
              r.redirects, r.error);
    using R = HttpResponse::Refusal;
    std::string why;
    if (r.refused == R::Redirect)
      why = t.gist ? "the gist API redirected elsewhere, and jarvis follows it only on its own host"
                   : "it redirects to a host jarvis does not fetch designs from (gist.url_hosts)";
    else if (r.refused == R::Address)
      why = "its server has a loopback, private or link-local address, which jarvis does not "
            "fetch designs from (gist.allow_private_addresses)";
    else if (r.refused == R::Url) why = "the URL is not one jarvis fetches designs from";
    else if (r.timed_out) why = "timed out after " + format_duration(config_.timeout);
    else if (r.too_big) why = "too big: over the " + std::to_string(max_bytes_of(t)) + "-byte limit";
    else if (r.too_many_redirects) why = "too many redirects (more than " + std::to_string(config_.max_redirects) + ")";
    else why = "the server could not be reached or the connection failed (the details are in jarvis's log)";
    error = "cannot fetch " + what + ": " + why;
    return std::nullopt;
  }
  if (r.status == 404) {
    error = t.gist ? "gist " + t.gist_id + " not found (or it is secret and the token cannot see it)"
                   : short_ref(ref) + " not found (HTTP 404)";
    return std::nullopt;
  }
  if (r.status == 401 || (r.status == 403 && !r.retry_after_s)) {
    error = "cannot fetch " + what + ": HTTP " + std::to_string(r.status) +
            (t.gist ? " (check gist.token_env / gist.token_file)" : "");
    return std::nullopt;
  }
  if (r.status == 429 || r.status == 403) {
    error = "cannot fetch " + what + ": rate limited; try again in " +
            std::to_string(r.retry_after_s.value_or(60)) + "s";
    return std::nullopt;
  }
  if (r.status < 200 || r.status >= 300) {
    error = "cannot fetch " + what + ": HTTP " + std::to_string(r.status);
    return std::nullopt;
  }
  std::string text = std::move(r.body), file;
  if (t.gist) {
    auto content = design_from_gist(text, t, file, error);
    if (!content) return std::nullopt;
    text = std::move(*content);
  }
  // A remote design's values may be secrets (and a gist's file names too): errors name the
  // field and the line, never the value.
  // The job record keeps the ref (status, jobs, the log): without the URL's credentials.
  auto design = parse_design(redact_url_credentials(ref), std::move(text), error, DesignOrigin::Remote);
  if (!design) {
    error = what + ": " + error;
    return std::nullopt;
  }
  return design;
}

}  // namespace jarvis
