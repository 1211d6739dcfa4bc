#include "bot/app/online_check.h"

#include <algorithm>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <strings.h>
#include <vector>

#include <boost/asio.hpp>

#include "bot/chat/announcer.h"
#include "bot/chat/irc/irc_adapter.h"
#include "bot/chat/slack/slack_adapter.h"
#include "bot/chat/xmpp/xmpp_adapter.h"
#include "bot/net/http_client.h"

namespace jarvis {
namespace {

// What one server said while the bot connected and joined.
struct Probe : ChatAdapter::Listener {
  std::string protocol, server;
  std::unique_ptr<ChatAdapter> adapter;
  std::vector<std::string> rooms, unjoined;
  bool connected = false, ended = false;
  std::string disconnect_reason;
  std::map<std::string, std::string> refused;
  std::set<std::string> joined, people;

  void on_connected() override {
    connected = true;
    for (const auto& room : rooms) adapter->join(room);
  }
  void on_disconnected(const std::string& reason) override {
    if (!ended) disconnect_reason = reason;
    ended = true;
  }
  void on_message(const ChatMessage&) override {}
  void on_refused(const std::string& place, const std::string& reason) override {
    refused.emplace(canonical(place), reason);
  }
  void on_joined(const std::string& place, bool as_room) override {
    joined.insert(canonical(place));
    if (!as_room) people.insert(canonical(place));
  }

  // IRC channel names are case-insensitive; the server echoes its own spelling.
  std::string canonical(const std::string& place) const {
    std::string out = place;
    if (protocol == "irc" || protocol == "xmpp")
      std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
  }
  bool answered(const std::string& room) const {
    return joined.count(canonical(room)) || refused.count(canonical(room));
  }
  bool done() const {
    if (ended) return true;
    if (!connected) return false;
    return std::all_of(rooms.begin(), rooms.end(), [&](const auto& r) { return answered(r); });
  }
};

}  // namespace

int check_online(const Config& c, std::chrono::seconds timeout, std::ostream& out) {
  boost::asio::io_context io;
  Announcer announcer(c.announce);
  std::unique_ptr<HttpClient> http;
  std::vector<std::unique_ptr<Probe>> probes;
  auto add = [&](std::string protocol, std::string server, std::unique_ptr<ChatAdapter> adapter,
                 std::vector<std::string> rooms) {
    auto p = std::make_unique<Probe>();
    p->protocol = std::move(protocol);
    p->server = std::move(server);
    p->adapter = std::move(adapter);
    for (const auto& r : announcer.rooms_on(p->protocol))
      if (std::find(rooms.begin(), rooms.end(), r) == rooms.end()) rooms.push_back(r);
    // A Slack app does not join; people invite it. Its places are only named below.
    (p->protocol == "slack" ? p->unjoined : p->rooms) = std::move(rooms);
    p->adapter->set_listener(p.get());
    probes.push_back(std::move(p));
  };
  if (c.irc)
    add("irc", c.irc->server + ":" + std::to_string(c.irc->port), std::make_unique<IrcAdapter>(io, *c.irc),
        c.irc_channels);
  if (c.xmpp) {
    // Another resource than serve's: the same one would make the server close serve's session.
    XmppConfig x = *c.xmpp;
    x.resource += "-check";
    add("xmpp", c.xmpp->jid, std::make_unique<XmppAdapter>(io, x), c.xmpp_rooms);
  }
  SlackAdapter* slack = nullptr;
  if (c.slack) {
    http = std::make_unique<HttpClient>(io);
    auto adapter = std::make_unique<SlackAdapter>(io, *http, *c.slack);
    slack = adapter.get();
    add("slack", c.slack->api_url, std::move(adapter), {});
  }
  if (probes.empty()) {
    out << "online: no chat server is configured (irc:, xmpp: or slack:); nothing to reach\n";
    return 0;
  }
  for (auto& p : probes) {
    if (p->adapter.get() != slack) {
      p->adapter->connect();
      continue;
    }
    slack->check_tokens([p = p.get()](const std::string& error) {
      if (error.empty()) p->connected = true;
      else p->on_disconnected(error);
    });
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline &&
         !std::all_of(probes.begin(), probes.end(), [](const auto& p) { return p->done(); }))
    io.run_for(std::chrono::milliseconds(50));

  int problems = 0;
  for (auto& p : probes) {
    const std::string& proto = p->protocol;
    if (!p->connected) {
      ++problems;
      out << proto << ": cannot connect to " << p->server << ": "
          << (p->disconnect_reason.empty() ? "no answer within " + std::to_string(timeout.count()) + "s"
                                           : p->disconnect_reason)
          << '\n';
      continue;
    }
    out << proto << ": connected to " << p->server << " as " << p->adapter->own_name() << '\n';
    if (std::string who = p->adapter->identity_source(); !who.empty())
      out << proto << ": people are known by " << who << '\n';
    for (const auto& room : p->rooms) {
      auto r = p->refused.find(p->canonical(room));
      if (p->people.count(p->canonical(room))) {
        out << proto << ": " << room << ": not a room; lines go to it as direct messages (a bounce is logged)\n";
      } else if (p->joined.count(p->canonical(room))) {
        out << proto << ": " << room << ": joined\n";
      } else if (r != p->refused.end()) {
        ++problems;
        out << proto << ": " << room << ": refused: " << r->second << '\n';
      } else {
        ++problems;
        out << proto << ": " << room << ": "
            << (p->ended ? "the connection ended before the join was answered: " + p->disconnect_reason
                         : "no answer to the join within " + std::to_string(timeout.count()) + "s")
            << '\n';
      }
    }
    if (!p->unjoined.empty()) {
      std::string places;
      for (const auto& u : p->unjoined) places += (places.empty() ? "" : ", ") + u;
      out << proto << ": " << places << ": checked when the first line goes out (a refusal such as "
          << "not_in_channel is logged with the place)\n";
    }
  }
  // Leave politely and give the goodbyes a moment to go out.
  for (auto& p : probes)
    if (!p->ended) p->adapter->quit("jarvis check-config --online: done");
  auto bye = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < bye &&
         std::any_of(probes.begin(), probes.end(), [](const auto& p) { return p->adapter->connected(); }))
    io.run_for(std::chrono::milliseconds(50));
  for (auto& p : probes) p->adapter->set_listener(nullptr);
  return problems;
}

}  // namespace jarvis
