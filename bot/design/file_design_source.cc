#include "bot/design/file_design_source.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/asio/post.hpp>

namespace jarvis {

FileDesignSource::FileDesignSource(boost::asio::io_context& io, std::optional<std::string> root)
    : io_(io), root_(std::move(root)) {}

bool FileDesignSource::handles(const std::string& ref) const {
  return ref.find("://") == std::string::npos && ref.find('=') == std::string::npos;
}

std::optional<Design> FileDesignSource::load(const std::string& ref, std::string& error) const {
  namespace fs = std::filesystem;
  fs::path path;
  if (root_) {
    // A bare name from chat: no directories, no dot-files, no way out of the root.
    if (ref.empty() || ref.size() > 128 || ref[0] == '.' ||
        ref.find_first_of("/\\") != std::string::npos) {
      error = "'" + ref.substr(0, 80) + "' is not a design name (use a name from the designs "
              "directory, e.g. loki)";
      return std::nullopt;
    }
    path = fs::path(*root_) / ref;
    if (path.extension() != ".yaml" && path.extension() != ".yml") path += ".yaml";
  } else {
    path = ref;
  }
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) {
    error = "cannot read design " + ref + ": " + ec.message();
    return std::nullopt;
  }
  if (size > design_limits().max_bytes) {
    error = "design " + ref + " is " + std::to_string(size) + " bytes, over the " +
            std::to_string(design_limits().max_bytes) + "-byte limit";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  if (!in) {
    error = "cannot read design " + ref;
    return std::nullopt;
  }
  auto design = parse_design(ref, buf.str(), error);
  if (!design) error = ref + ": " + error;
  return design;
}

void FileDesignSource::fetch(const std::string& ref, Done done) {
  std::string error;
  auto design = load(ref, error);
  boost::asio::post(io_, [done = std::move(done), design = std::move(design),
                          error = std::move(error)]() mutable {
    done(std::move(design), std::move(error));
  });
}

}  // namespace jarvis
