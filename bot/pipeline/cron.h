#pragma once
// Cron lines for walks (`schedule: {cron: "*/5 * * * *"}`): five fields, minute hour
// day-of-month month day-of-week, each `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or
// a comma list of those; day-of-week 0-7 (0 and 7 are Sunday). Times are UTC. As in cron, when
// both day fields are restricted, a day matching either runs.
#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace jarvis {

struct CronSpec {
  std::string text;
  std::bitset<60> minute;
  std::bitset<24> hour;
  std::bitset<32> dom;
  std::bitset<13> month;
  std::bitset<7> dow;
  bool dom_any = true, dow_any = true;
};

std::optional<CronSpec> parse_cron(std::string_view text, std::string& error);
// The first whole minute strictly after `after_ms` that the line names (ms since the epoch);
// 0 if none within four years (a line like "0 0 30 2 *").
int64_t next_cron(const CronSpec& spec, int64_t after_ms);

}  // namespace jarvis
