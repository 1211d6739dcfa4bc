#pragma once
// check-config --online: connects to each configured chat server as serve would, joins every
// room and announce place there, reports what each server said, and leaves.
#include <chrono>
#include <iosfwd>

#include "bot/app/config.h"

namespace jarvis {

// One line per server and per place on `out`; the number of problems (0: all reached and
// joined). Gives each server `timeout` to connect and answer every JOIN.
int check_online(const Config& config, std::chrono::seconds timeout, std::ostream& out);

}  // namespace jarvis
