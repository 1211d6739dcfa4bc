#include "bot/design/file_design_source.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/asio/post.hpp>

#include "bot/util/text.h"

namespace jarvis {
namespace {

// For a name from chat that names no file: what was probably meant, and what there is.
std::string unknown_design(const std::string& ref, const std::filesystem::path& root) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    auto ext = e.path().extension().string();
    if (e.is_regular_file(ec) && (ext == ".yaml" || ext == ".yml")) names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  std::string out = "no design called \"" + ref + "\"";
  if (names.empty()) return out + " (the designs directory has none)";
  if (std::string meant = closest_name(lower(ref), names); !meant.empty()) out += "; did you mean \"" + meant + "\"?";
  out += " (designs: ";
  for (size_t i = 0; i < names.size() && i < 8; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 8) out += ", and " + std::to_string(names.size() - 8) + " more";
  return out + ")";
}

}  // namespace

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
    error = root_ && ec == std::errc::no_such_file_or_directory ? unknown_design(ref, *root_)
                                                               : "cannot read design " + ref + ": " + ec.message();
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
