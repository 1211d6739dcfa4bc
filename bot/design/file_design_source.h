#pragma once
#include <boost/asio/io_context.hpp>

#include "bot/design/design.h"

namespace jarvis {

// Designs from local YAML files. With a root directory (how chat fronts use it) only names
// inside that directory are served, so chat cannot read arbitrary files; "loki" means
// <root>/loki.yaml. Without a root (the CLI, run by a local user) any path is accepted.
class FileDesignSource : public DesignSource {
 public:
  FileDesignSource(boost::asio::io_context& io, std::optional<std::string> root);
  bool handles(const std::string& ref) const override;
  void fetch(const std::string& ref, Done done) override;

  // The synchronous part, for callers without a loop (and tests).
  std::optional<Design> load(const std::string& ref, std::string& error) const;

 private:
  boost::asio::io_context& io_;
  std::optional<std::string> root_;
};

}  // namespace jarvis
