#include "bot/store/task_codec.h"

#include <sstream>

namespace jarvis {

std::string encode_tasks(const std::vector<TaskSpec>& tasks) {
  std::ostringstream out;
  for (const auto& t : tasks)
    out << t.name << '\t' << t.timeout.count() << '\t' << t.retries << '\t'
        << (t.destructive ? 1 : 0) << '\n';
  return out.str();
}

std::vector<TaskSpec> decode_tasks(const std::string& text) {
  std::vector<TaskSpec> tasks;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    TaskSpec t;
    int64_t timeout = 0;
    int destructive = 0;
    std::getline(fields, t.name, '\t');
    fields >> timeout >> t.retries >> destructive;
    t.timeout = Millis(timeout);
    t.destructive = destructive != 0;
    tasks.push_back(std::move(t));
  }
  return tasks;
}

}  // namespace jarvis
