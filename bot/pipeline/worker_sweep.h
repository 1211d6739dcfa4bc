#pragma once
// Finds and kills worker processes by the marker variables the engine puts in their
// environment (JARVIS_ENGINE, JARVIS_JOB, ...). A marker reaches what a pid or a process
// group cannot: a worker whose pid was never stored because its engine died right after the
// spawn, and a `setsid` grandchild that left the worker's process group.
#include <string>
#include <vector>

namespace jarvis {

struct MarkedProcess {
  int pid = 0;
  int pgid = 0;
};

// Live (not zombie) processes of this user whose environment holds every one of `all` and
// none of `none` ("NAME=value" entries). Never throws: an unreadable /proc entry is skipped.
std::vector<MarkedProcess> find_marked_processes(const std::vector<std::string>& all,
                                                 const std::vector<std::string>& none = {},
                                                 const std::string& proc_root = "/proc");

// SIGKILLs each process found and its process group; returns how many were found.
int kill_marked_processes(const std::vector<std::string>& all,
                          const std::vector<std::string>& none = {},
                          const std::string& proc_root = "/proc");

}  // namespace jarvis
