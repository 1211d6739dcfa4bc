#include "bot/chat/announcer.h"

#include <algorithm>

#include "bot/commands/command_service.h"

namespace jarvis {

std::vector<std::string> Announcer::places_for(const EngineEvent& e) const {
  std::vector<std::string> places = config_.everywhere;
  if (auto it = config_.by_pipeline.find(e.pipeline); it != config_.by_pipeline.end())
    places.insert(places.end(), it->second.begin(), it->second.end());
  if (config_.to_requester) places.push_back(e.origin);
  std::sort(places.begin(), places.end());
  places.erase(std::unique(places.begin(), places.end()), places.end());
  return places;
}

void Announcer::on_event(const EngineEvent& e) {
  using K = EngineEvent::Kind;
  if (e.kind == K::StageLog) return;
  std::string line = describe_event(e);
  if (line.empty()) return;
  bool progress = e.kind == K::StageStarted || e.kind == K::StageSucceeded ||
                  e.kind == K::StageRetrying || e.kind == K::JobStarted;
  for (const auto& place : places_for(e)) {
    auto colon = place.find(':');
    if (colon == std::string::npos) continue;
    auto front = fronts_.find(place.substr(0, colon));
    if (front == fronts_.end()) continue;  // cli, console: not a chat place
    std::string target = place.substr(colon + 1);
    if (!target.empty() && target[0] == '@') target.erase(0, 1);
    if (target.empty()) continue;
    front->second->say(target, line, progress, "job " + std::to_string(e.job));
  }
}

}  // namespace jarvis
