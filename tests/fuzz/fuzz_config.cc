// Config loading: any file is loaded or refused with std::runtime_error naming the file;
// no other exception escapes.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include "bot/app/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/jarvis-fuzz-config-XXXXXX";
    std::string d = ::mkdtemp(tmpl);
    return d;
  }();
  static const std::string path = dir + "/jarvis.yaml";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  jarvis::ConfigOverrides o;
  o.config_file = path;
  try {
    (void)jarvis::load_config(o);
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    if (what.rfind(path, 0) != 0 && what.find("log format") == std::string::npos) std::abort();
  }
  return 0;
}
