// The gist API's answer (JSON chosen by whoever controls the gist or the server) and the
// design URL a chat user types: design_from_gist and target() answer with a design or an
// error, and never throw.
#include <cstdint>
#include <string>

#include <boost/asio/io_context.hpp>

#include "bot/design/url_design_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static boost::asio::io_context io;
  static jarvis::HttpClient http(io);
  static jarvis::UrlDesignSource source(http, jarvis::GistConfig{});
  std::string input(reinterpret_cast<const char*>(data), size);
  // The first line is a URL as typed in chat, the rest the API's answer.
  size_t nl = input.find('\n');
  std::string ref = input.substr(0, nl);
  std::string json = nl == std::string::npos ? std::string() : input.substr(nl + 1);
  std::string error, file;
  auto target = source.target(ref, error);
  jarvis::UrlTarget t;
  if (target && target->gist) t = *target;
  else {
    t.gist = true;
    t.gist_id = "42";
    t.file_hint = ref.size() < 40 ? ref : std::string();
  }
  // Issue 17, finding 21: a `files` entry that was not a mapping threw YAML::BadSubscript out
  // of here (tests/fuzz/corpus/gist/bad-entry.txt); any exception is a crash.
  auto text = source.design_from_gist(json, t, file, error);
  if (text) {
    std::string design_error;
    (void)jarvis::parse_design(ref, *text, design_error);
  }
  return 0;
}
