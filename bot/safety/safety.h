#pragma once
// The safety catch (issue 14): which hosts are in production and on what fact, what a
// destructive stage is about to do to one, and change freezes. Pure functions: the engine
// decides when a job waits, CommandService who may confirm or freeze.
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "bot/pipeline/pipeline.h"
#include "bot/store/job_store.h"
#include "bot/util/duration.h"

namespace jarvis {

struct SafetyConfig {
  Millis confirm_timeout{std::chrono::minutes(15)};  // how long a confirmation is waited for
  bool two_person = true;                            // the requester may not confirm their own job
  std::vector<std::string> production_hosts;         // glob patterns on the host name or fqdn
};

struct ProductionFact {
  bool production = false;
  // What says so: "config safety.production_hosts 'loki*'", "the design's instance.production",
  // "inventory:check_production (its cmdb record)".
  std::string source;
};

// Whether `host` is in production according to the config's patterns, the document's
// `instance.production`, or what inventory:check_production put on it (`inventory.production`,
// or a top-level `production`). The first that says yes wins; a document that cannot be read
// counts as saying nothing.
ProductionFact production_fact(const std::string& document, const std::string& host,
                               const SafetyConfig& config);
ProductionFact production_fact(const YAML::Node& document, const std::string& host,
                               const SafetyConfig& config);

// What identifies the host on the document: "loki.websages.com, sandbox 4711, 192.0.2.10"
// (fqdn, provider and node id, address; whichever are there), bounded and on one line.
std::string host_facts(const std::string& document);

// The first stage after the run of destructive stages that starts at `stage` (0-based).
int destructive_run_end(const std::vector<TaskSpec>& tasks, int stage);

// "loki (loki.websages.com, sandbox 4711, 192.0.2.10) is in production (the design's
// instance.production): stage 4/19 sandbox:power_off will power it off, then stage 5 deletes
// it. Say `confirm 17` within 15m, or `cancel 17`."
std::string confirmation_prompt(const JobRecord& job, int through, const ProductionFact& fact,
                                Millis timeout);

// "15m", "2h", "90s": a configured duration as people write it.
std::string round_duration(Millis d);

// The freeze in force on `host` (its own, then its cluster's, then "all"), or null.
const Freeze* freeze_for(const std::vector<Freeze>& freezes, const std::string& host,
                         const std::string& cluster);
// "frozen by alice until 18:00 UTC (release week)"
std::string describe_freeze(const Freeze& freeze, int64_t now);

}  // namespace jarvis
