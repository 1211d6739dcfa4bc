#include "bot/chat/announcer.h"

#include <algorithm>

#include "bot/commands/command_service.h"
#include "bot/util/duration.h"
#include "bot/util/log.h"
#include "bot/util/utf8.h"
#include "bot/util/yaml_doc.h"

namespace jarvis {
namespace {

std::string short_text(std::string s, size_t max = 300) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  if (s.size() > max) s = std::string(utf8_prefix(s, max)) + "...";
  return s;
}

bool is_direct_place(const std::string& target) { return !target.empty() && target[0] == '@'; }

}  // namespace

std::optional<AnnounceLevel> parse_announce_level(std::string_view name) {
  if (name == "quiet") return AnnounceLevel::Quiet;
  if (name == "stages") return AnnounceLevel::Stages;
  if (name == "all") return AnnounceLevel::All;
  return std::nullopt;
}

std::string_view announce_level_name(AnnounceLevel level) {
  switch (level) {
    case AnnounceLevel::Quiet: return "quiet";
    case AnnounceLevel::Stages: return "stages";
    case AnnounceLevel::All: return "all";
  }
  return "quiet";
}

std::string job_result_summary(const std::string& clipboard) {
  if (clipboard.empty()) return {};
  try {
    YAML::Node doc = load_mapping_document(clipboard, YamlLimits{});
    YAML::Node instance = doc["instance"];
    if (!instance || !instance.IsMap()) return {};
    std::string out;
    for (const char* key : {"fqdn", "ip"}) {
      YAML::Node v = instance[key];
      if (v && v.IsScalar() && !v.Scalar().empty())
        out += (out.empty() ? "" : ", ") + short_text(v.Scalar(), 100);
    }
    return out;
  } catch (const std::exception&) {
    return {};
  }
}

void Announcer::add_front(ChatFront& front) {
  fronts_[front.protocol()] = &front;
  // Every place announcements go to on this protocol is joined at connect: a +n channel the
  // bot is not in would refuse the lines.
  for (const auto& room : rooms_on(front.protocol())) front.add_room(room);
}

std::vector<std::string> Announcer::rooms_on(const std::string& protocol) const {
  std::vector<std::string> all = config_.everywhere;
  for (const auto& [pipeline, places] : config_.by_pipeline) all.insert(all.end(), places.begin(), places.end());
  for (const auto& [place, level] : config_.levels) all.push_back(place);
  std::vector<std::string> rooms;
  std::string prefix = protocol + ":";
  for (const auto& place : all) {
    if (place.rfind(prefix, 0) != 0) continue;
    std::string target = place.substr(prefix.size());
    if (target.empty() || is_direct_place(target)) continue;
    if (protocol == "irc" && target[0] != '#' && target[0] != '&') continue;  // a nick
    if (protocol == "xmpp" && target.find('@') == std::string::npos) continue;
    if (std::find(rooms.begin(), rooms.end(), target) == rooms.end()) rooms.push_back(target);
  }
  return rooms;
}

std::vector<std::string> Announcer::places_for(const EngineEvent& e) const {
  std::vector<std::string> places = config_.everywhere;
  if (auto it = config_.by_pipeline.find(e.pipeline); it != config_.by_pipeline.end())
    places.insert(places.end(), it->second.begin(), it->second.end());
  if (config_.to_requester && !e.origin.empty()) places.push_back(e.origin);
  std::sort(places.begin(), places.end());
  places.erase(std::unique(places.begin(), places.end()), places.end());
  return places;
}

AnnounceLevel Announcer::level_for(const std::string& place) const {
  if (auto it = config_.levels.find(place); it != config_.levels.end()) return it->second;
  auto colon = place.find(':');
  bool direct = colon != std::string::npos && is_direct_place(place.substr(colon + 1));
  if (direct) {
    if (auto it = config_.levels.find("direct"); it != config_.levels.end()) return it->second;
    return config_.direct_level;
  }
  return config_.channel_level;
}

std::string Announcer::end_line(const EngineEvent& e, const std::string& mention) const {
  using K = EngineEvent::Kind;
  std::string who = mention.empty() ? "" : mention + ": ";
  std::string job = "job " + std::to_string(e.job);
  std::string stage = std::to_string(e.stage) + "/" + std::to_string(e.stage_count) + " " + e.task;
  switch (e.kind) {
    case K::JobReady: {
      std::string got;
      if (lookup_) {
        try {
          if (auto j = lookup_(e.job)) got = job_result_summary(j->clipboard);
        } catch (const std::exception&) {
        }
      }
      return who + e.host + " is ready: " + (got.empty() ? "" : got + ", ") +
             std::to_string(e.stage_count) + " stages in " + format_duration(e.elapsed) + " (" + job + ")";
    }
    case K::JobFailed:
      if (e.text.rfind(kNotVerified, 0) == 0)
        return who + e.host + " is deployed but not verified at stage " + stage + ": " +
               short_text(e.text.substr(std::string_view(kNotVerified).size())) + " (" + job +
               "). Say \"retry " + e.host + "\" to re-run the verification, or \"log " + e.host +
               "\" for the check's output.";
      return who + e.host + " failed at stage " + stage + ": " + short_text(e.text) + " (" + job +
             "). Say \"retry " + e.host + "\" to resume, or \"log " + e.host + "\" for the worker's output.";
    case K::JobCancelled:
      return who + e.host + " was cancelled at stage " + stage + " by " + e.text + " (" + job +
             "). Say \"retry " + e.host + "\" to resume.";
    default: return {};
  }
}

void Announcer::say_everywhere(const std::string& line) {
  std::vector<std::string> places = config_.everywhere;
  std::sort(places.begin(), places.end());
  places.erase(std::unique(places.begin(), places.end()), places.end());
  for (const auto& place : places) {
    auto colon = place.find(':');
    if (colon == std::string::npos) continue;
    auto front = fronts_.find(place.substr(0, colon));
    if (front == fronts_.end()) continue;
    std::string target = place.substr(colon + 1);
    if (!target.empty() && target[0] == '@') target.erase(0, 1);
    if (!target.empty()) front->second->say(target, OutLine{line, OutLine::Kind::Notice});
  }
}

void Announcer::on_event(const EngineEvent& e) {
  using K = EngineEvent::Kind;
  if (e.kind == K::StageLog) return;
  bool final = e.kind == K::JobReady || e.kind == K::JobFailed || e.kind == K::JobCancelled;
  bool store = e.kind == K::StoreFailed || e.kind == K::StoreRecovered || e.kind == K::StoreLost;
  // What people must act on or know about (a confirmation asked for or given, a forced deploy,
  // a freeze) is said at every level, as a line of its own (never edited into progress).
  bool notice = e.kind == K::ConfirmationNeeded || e.kind == K::Confirmed || e.kind == K::Notice;
  std::string plain = describe_event(e);
  if (plain.empty()) return;
  bool was_queued = queued_.count(e.job) > 0;
  if (e.kind == K::JobQueued) queued_.insert(e.job);
  if (final || e.kind == K::JobStarted) queued_.erase(e.job);
  auto origin_colon = e.origin.find(':');
  std::string origin_protocol = origin_colon == std::string::npos ? "" : e.origin.substr(0, origin_colon);
  for (const auto& place : places_for(e)) {
    auto colon = place.find(':');
    if (colon == std::string::npos) continue;
    std::string protocol = place.substr(0, colon);
    auto front = fronts_.find(protocol);
    if (front == fronts_.end()) continue;  // cli, console: not a chat place
    std::string target = place.substr(colon + 1);
    bool direct = is_direct_place(target);
    if (direct) target.erase(0, 1);
    if (target.empty()) continue;
    AnnounceLevel level = level_for(place);
    bool at_origin = place == e.origin;
    bool send = store || final || notice || level == AnnounceLevel::All;
    if (!send && level == AnnounceLevel::Stages)
      send = e.kind == K::StageSucceeded || e.kind == K::StageRetrying;
    if (!send && level == AnnounceLevel::Quiet && e.kind == K::JobStarted)
      // Where it was asked, the answer ("deploying ... (job 17)") was the start line, unless
      // the job waited in the queue or is resuming.
      send = !at_origin || was_queued || e.stage > 1;
    if (!send) continue;
    OutLine line;
    line.key = e.job && !notice ? "job " + std::to_string(e.job) : "";
    if (final) {
      // The requester is named where they can be highlighted: on their own protocol, in a
      // room (a direct message is to them already).
      std::string mention = !direct && protocol == origin_protocol && !e.requested_by.empty() ? e.requested_by : "";
      line.text = end_line(e, mention);
      line.kind = OutLine::Kind::Final;
      line.mentions = !mention.empty();
      if (e.kind == K::JobReady) {
        line.group = (mention.empty() ? "" : mention + ": ") + "ready:";
        line.item = e.host;
        line.job = e.job;
      }
    } else {
      line.text = plain;
      line.kind = store || notice ? OutLine::Kind::Notice : OutLine::Kind::Progress;
    }
    front->second->say(target, std::move(line));
  }
}

}  // namespace jarvis
