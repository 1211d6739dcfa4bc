#pragma once
// Designs from the web: gist pages (https://gist.github.com/<id>, /<user>/<id>) read through
// the gist API, and raw https:// URLs from allowed hosts. Fetched with HttpClient on the loop.
#include <string>
#include <vector>

#include "bot/design/design.h"
#include "bot/net/http_client.h"

namespace jarvis {

struct GistConfig {
  std::string api_url = "https://api.github.com";  // GitHub Enterprise: https://HOST/api/v3
  std::vector<std::string> gist_hosts = {"gist.github.com"};  // hosts of gist page URLs
  // Hosts raw URLs may name; chat must not make the bot fetch from anywhere it can reach.
  // "host" allows the scheme's default port (443) only, "host:port" that port. Redirects are
  // followed only to these (and, for the gist API, only within api_url's host and port).
  std::vector<std::string> url_hosts = {"gist.githubusercontent.com"};
  // Loopback, private (RFC 1918, ULA), link-local, CGNAT, metadata and unspecified addresses
  // are refused, checked on the address connected to (after DNS); true allows them (a GitHub
  // Enterprise on the LAN, tests).
  bool allow_private_addresses = false;
  std::string token;    // sent to the gist API only (from token_env / token_file)
  std::string ca_file;  // trust this CA bundle instead of the system's
  Millis timeout{15000};
  size_t max_bytes = 1u << 20;  // of the design itself
  long max_redirects = 3;
  bool allow_http = false;      // plain http:// URLs (a local mirror, tests)
  // In a gist of several files, the design is the one with this name (or named by the URL's
  // #file-<name> anchor, as GitHub links to one file).
  std::vector<std::string> design_files = {"design.yaml", "design.yml", "jarvis.yaml"};
};

// Where a ref points, once understood.
struct UrlTarget {
  bool gist = false;
  std::string gist_id;    // for gists
  std::string file_hint;  // "#file-loki-yaml" anchor, without "#file-"
  std::string url;        // what is fetched: the API URL for gists, the URL itself otherwise
  std::string host;
  long port = 0;
};

class UrlDesignSource : public DesignSource {
 public:
  UrlDesignSource(HttpClient& http, GistConfig config);
  bool handles(const std::string& ref) const override;
  bool remote(const std::string& ref) const override { return handles(ref); }
  void fetch(const std::string& ref, Done done) override;

  // Parses `ref`; on failure `error` says why ("host x is not allowed", ...).
  std::optional<UrlTarget> target(const std::string& ref, std::string& error) const;
  // Picks the design from a gist API answer (JSON); public for tests.
  std::optional<std::string> design_from_gist(const std::string& json, const UrlTarget& target,
                                              std::string& file, std::string& error) const;

 private:
  std::optional<std::string> pick_from_gist(const std::string& json, const UrlTarget& target,
                                            std::string& file, std::string& error) const;
  // What a finished fetch means: a design, or the reason for the chat reply.
  std::optional<Design> answer(const std::string& ref, const UrlTarget& target, HttpResponse r,
                               std::string& error) const;
  HttpRequest request_for(const UrlTarget& target) const;
  bool url_host_allowed(const UrlParts& url) const;
  size_t max_bytes_of(const UrlTarget& target) const;
  HttpClient& http_;
  GistConfig config_;
};

}  // namespace jarvis
