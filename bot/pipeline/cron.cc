#include "bot/pipeline/cron.h"

#include <charconv>
#include <ctime>
#include <sstream>
#include <vector>

namespace jarvis {
namespace {

bool number(std::string_view s, int& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// One field into `bits` (positions lo..hi); false with `error` on anything else.
template <size_t N>
bool field(std::string_view text, int lo, int hi, std::bitset<N>& bits, bool& any, const char* name,
           std::string& error) {
  any = text == "*";
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string_view part = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    int step = 1, a = lo, b = hi;
    if (size_t slash = part.find('/'); slash != std::string_view::npos) {
      if (!number(part.substr(slash + 1), step) || step < 1) {
        error = std::string(name) + ": the step after / must be a number from 1";
        return false;
      }
      part = part.substr(0, slash);
    }
    if (part != "*") {
      size_t dash = part.find('-');
      if (dash == std::string_view::npos ? !number(part, a) : !number(part.substr(0, dash), a) || !number(part.substr(dash + 1), b)) {
        error = std::string(name) + ": '" + std::string(part) + "' is not *, a number or a range";
        return false;
      }
      if (dash == std::string_view::npos) b = step > 1 ? hi : a;
    }
    if (a < lo || b > hi || a > b) {
      error = std::string(name) + " must be from " + std::to_string(lo) + " to " + std::to_string(hi);
      return false;
    }
    for (int v = a; v <= b; v += step) bits.set(static_cast<size_t>(v == 7 && N == 7 ? 0 : v));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return true;
}

}  // namespace

std::optional<CronSpec> parse_cron(std::string_view text, std::string& error) {
  std::istringstream in{std::string(text)};
  std::vector<std::string> f;
  for (std::string w; in >> w;) f.push_back(w);
  if (f.size() != 5) {
    error = "a cron line has five fields (minute hour day-of-month month day-of-week), like \"*/5 * * * *\"";
    return std::nullopt;
  }
  CronSpec s;
  s.text = std::string(text);
  bool ignored = false;
  std::bitset<8> dow8;
  if (!field(f[0], 0, 59, s.minute, ignored, "minute", error) || !field(f[1], 0, 23, s.hour, ignored, "hour", error) ||
      !field(f[2], 1, 31, s.dom, s.dom_any, "day of month", error) ||
      !field(f[3], 1, 12, s.month, ignored, "month", error) || !field(f[4], 0, 7, dow8, s.dow_any, "day of week", error))
    return std::nullopt;
  for (size_t i = 0; i < 7; ++i) s.dow[i] = dow8[i];
  if (dow8[7]) s.dow[0] = true;
  return s;
}

int64_t next_cron(const CronSpec& s, int64_t after_ms) {
  time_t t = static_cast<time_t>(after_ms / 60000 + 1) * 60;  // the next whole minute
  for (int i = 0; i < 4 * 366 * 24 * 60; ++i, t += 60) {
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    if (!s.month[static_cast<size_t>(tm.tm_mon + 1)]) continue;
    bool dom = s.dom[static_cast<size_t>(tm.tm_mday)], dow = s.dow[static_cast<size_t>(tm.tm_wday)];
    bool day = s.dom_any && s.dow_any ? true : s.dom_any ? dow : s.dow_any ? dom : (dom || dow);
    if (!day || !s.hour[static_cast<size_t>(tm.tm_hour)] || !s.minute[static_cast<size_t>(tm.tm_min)]) continue;
    return static_cast<int64_t>(t) * 1000;
  }
  return 0;
}

}  // namespace jarvis
