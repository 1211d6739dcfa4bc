#pragma once
// Announces job progress on chat: the engine's events, to the rooms configured for all jobs
// or for the job's pipeline, and back to where the job was asked for, each place at its own
// level. The end of a job names the person who asked, in the protocol's own way.
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bot/chat/chat_front.h"
#include "bot/pipeline/engine.h"
#include "bot/store/job_store.h"

namespace jarvis {

// How much of a job a place hears.
enum class AnnounceLevel {
  Quiet,   // one line when a job starts (not where it was asked: the answer said so), one at the end
  Stages,  // one line per finished stage (and per failed attempt), and the end; no "started" lines
  All,     // every event: queued, started, each stage started and done, the end
};
std::optional<AnnounceLevel> parse_announce_level(std::string_view name);
std::string_view announce_level_name(AnnounceLevel level);

struct AnnounceConfig {
  std::vector<std::string> everywhere;  // "irc:#ops"
  std::map<std::string, std::vector<std::string>> by_pipeline;
  bool to_requester = true;
  AnnounceLevel channel_level = AnnounceLevel::Quiet;  // rooms and channels
  AnnounceLevel direct_level = AnnounceLevel::Stages;  // a direct message to the requester
  std::map<std::string, AnnounceLevel> levels;         // "irc:#deploys" -> all
};

class Announcer {
 public:
  explicit Announcer(AnnounceConfig config) : config_(std::move(config)) {}
  void add_front(ChatFront& front);
  // Where the end line finds what the job produced (the host's name and address from its
  // last clipboard); without it the end line says the stage count and time only.
  void set_job_lookup(std::function<std::optional<JobRecord>(int64_t)> lookup) { lookup_ = std::move(lookup); }
  void on_event(const EngineEvent& event);
  // "proto:#room" / "proto:@nick" places an event goes to.
  std::vector<std::string> places_for(const EngineEvent& event) const;
  AnnounceLevel level_for(const std::string& place) const;
  // The channels and rooms of `protocol` that announcements go to (joined at connect).
  std::vector<std::string> rooms_on(const std::string& protocol) const;
  // A line for every configured place (not the requesters'), such as "resumed after a restart".
  void say_everywhere(const std::string& line);
  // The end line for a place: "alice: loki is ready: loki.websages.com, 192.0.2.10, 19 stages
  // in 3m02s (job 17)"; `mention` is how the place's protocol names the requester, or empty.
  std::string end_line(const EngineEvent& event, const std::string& mention) const;

 private:
  AnnounceConfig config_;
  std::map<std::string, ChatFront*> fronts_;
  std::function<std::optional<JobRecord>(int64_t)> lookup_;
  std::set<int64_t> queued_;  // jobs announced as queued: their start is news where they were asked
};

// What a finished job produced, from its clipboard: "loki.websages.com, 192.0.2.10" (the
// instance's fqdn and ip, whichever it has), or empty.
std::string job_result_summary(const std::string& clipboard);

}  // namespace jarvis
