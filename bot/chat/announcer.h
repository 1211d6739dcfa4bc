#pragma once
// Announces job progress on chat: every event of the engine, to the rooms configured for
// all jobs or for the job's pipeline, and back to where the job was asked for.
#include <map>
#include <string>
#include <vector>

#include "bot/chat/chat_front.h"
#include "bot/pipeline/engine.h"

namespace jarvis {

struct AnnounceConfig {
  std::vector<std::string> everywhere;  // "irc:#ops"
  std::map<std::string, std::vector<std::string>> by_pipeline;
  bool to_requester = true;
};

class Announcer {
 public:
  explicit Announcer(AnnounceConfig config) : config_(std::move(config)) {}
  void add_front(ChatFront& front) { fronts_[front.protocol()] = &front; }
  void on_event(const EngineEvent& event);
  // "proto:#room" / "proto:@nick" places an event goes to.
  std::vector<std::string> places_for(const EngineEvent& event) const;

 private:
  AnnounceConfig config_;
  std::map<std::string, ChatFront*> fronts_;
};

}  // namespace jarvis
