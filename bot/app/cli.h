#pragma once

namespace jarvis {

// The `jarvis` command line: run, serve, status, jobs, log, cancel, retry, plan, check-config.
// Returns the process exit status: 0 success, 1 a job or command failed, 2 usage or config.
int cli_main(int argc, char** argv);

}  // namespace jarvis
