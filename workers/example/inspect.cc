// example:inspect: a read-only worker in C++ with yaml-cpp.
//
// Reads the whole clipboard from stdin, parses it, logs instance.hostname and
// the number of top-level keys to stderr, and prints nothing on stdout, so the
// bot passes the clipboard on unchanged. Not re-emitting the YAML is the point:
// yaml-cpp 0.7 drops the quotes of '007' when it writes a node back, and the
// next reader then sees a number (see docs/workers.md, "Fidelity").
//
// Built by CMake to build/workers/example/inspect.
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>

int main() {  // argv[1] would be the task name ("inspect"); this worker does only one
  const char* env_task = std::getenv("JARVIS_TASK");
  const std::string task = env_task ? env_task : "example:inspect";

  // Read stdin to the end before anything else, even on error paths.
  const std::string text{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};

  YAML::Node clipboard;
  try {
    clipboard = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    std::cerr << task << ": the clipboard is not YAML: " << e.what() << '\n';
    return 1;
  }
  if (!clipboard.IsMap()) {
    std::cerr << task << ": the clipboard is not a mapping\n";
    return 1;
  }

  // Look keys up through a const node: the non-const operator[] inserts
  // missing keys. A missing key gives an invalid node: test it with `if (node)`
  // before anything else, as IsMap(), Scalar() and [] on it throw.
  const YAML::Node& cb = clipboard;
  std::string hostname = "(none)";
  const YAML::Node instance = cb["instance"];
  if (instance && instance.IsMap()) {
    const YAML::Node name = instance["hostname"];
    if (name && name.IsScalar()) hostname = name.Scalar();
  }

  std::cerr << task << ": instance.hostname is " << hostname << ", the clipboard has "
            << cb.size() << " top-level keys\n";
  return 0;  // nothing on stdout: clipboard unchanged
}
