#pragma once
// How a job's task list is kept in a store: one line per task, tab-separated fields. Shared by
// the SQLite and PostgreSQL stores, so `jarvis store migrate` copies the column as it is.
#include <string>
#include <vector>

#include "bot/pipeline/pipeline.h"

namespace jarvis {

std::string encode_tasks(const std::vector<TaskSpec>& tasks);
std::vector<TaskSpec> decode_tasks(const std::string& text);

}  // namespace jarvis
