#pragma once
// Slack through Socket Mode: no public URL. The Web API (auth.test, apps.connections.open,
// chat.postMessage, chat.update) goes through HttpClient (libcurl on the loop); events come
// over a WebSocket (Boost.Beast, TLS) whose every envelope is acknowledged at once. Slack may
// deliver an event twice (retries, or on a second socket during a refresh), so events are
// de-duplicated by id. Everything the bot says is queued and sent in order; a 429 waits its
// Retry-After, a network error retries, nothing is dropped. A job's progress is one message
// per place, edited in place with chat.update.
#include <deque>
#include <functional>
#include <optional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <yaml-cpp/yaml.h>

#include "bot/chat/chat_adapter.h"
#include "bot/net/http_client.h"
#include "bot/util/duration.h"

namespace boost::asio::ssl {
class context;
}

namespace jarvis {

struct SlackConfig {
  std::string app_token;  // xapp-...: opens Socket Mode connections (from env or a file)
  std::string bot_token;  // xoxb-...: posts as the bot (from env or a file)
  std::string api_url = "https://slack.com/api/";
  std::string ca_file;    // trust this CA bundle (HTTPS and WSS) instead of the system's
  Millis ping_interval{std::chrono::seconds(30)};  // WebSocket keep-alive
};

// Slack's text escaping (& < >) and its link markup (<https://x|label> -> https://x).
std::string slack_unescape(std::string_view text);
// Escapes & < > everywhere, so no text (a user's, a worker's) can be Slack markup: no
// <!channel>, <!here> or <@U...> mention. The one mention kept is the bot's own addressing
// of `addressee` at the start of a line ("<@U123>: you may not ..."); a <@U...> elsewhere
// is shown as @U... and notifies nobody.
std::string slack_escape(std::string_view text, std::string_view addressee = {});

class SlackAdapter : public ChatAdapter {
 public:
  SlackAdapter(boost::asio::io_context& io, HttpClient& http, SlackConfig config);
  ~SlackAdapter() override;

  std::string protocol() const override { return "slack"; }
  std::string own_name() const override { return bot_name_; }
  void set_listener(Listener* l) override { listener_ = l; }
  void connect() override;
  void disconnect() override;
  bool connected() const override { return connected_; }
  void join(const std::string&) override {}  // a Slack app is invited to channels by people
  void send(const std::string& target, const std::string& line) override;
  bool update_in_place(const std::string& target, const std::string& key, const std::string& line) override;
  size_t max_line_bytes() const override { return 3000; }

  size_t queued() const { return outgoing_.size(); }
  // check-config --online: both tokens work (auth.test, apps.connections.open), without
  // opening a socket that would take a share of the running bot's events. done("") on success.
  void check_tokens(std::function<void(const std::string& error)> done);

  struct Socket;  // one Socket Mode WebSocket (in the .cc)

 private:
  struct Outgoing {
    std::string channel, text, key;  // key: the job whose progress message this edits
    std::string thread_ts{};         // a reply in the thread of the message that asked
  };
  using ApiDone = std::function<void(const YAML::Node* answer, const std::string& error, std::optional<long> retry_after)>;
  void api(const std::string& method, const std::string& token, const std::string& json, ApiDone done);
  void open_socket();
  void socket_frame(const std::shared_ptr<Socket>& socket, const std::string& text);
  void socket_closed(const std::shared_ptr<Socket>& socket, const std::string& reason);
  void handle_event(const YAML::Node& event);
  void handle_frame(const std::shared_ptr<Socket>& socket, const std::string& text);
  // The text of a message as Slack gets it: escaped, a leading mention kept only for someone
  // who spoke to the bot (the requester it answers).
  std::string slack_text(const std::string& line) const;
  void remember_speaker(const std::string& user);
  std::string channel_for(const std::string& target) const;
  void enqueue(Outgoing o);
  void pump();
  void retry_later(Millis delay);
  void teardown(const std::string& reason);

  boost::asio::io_context& io_;
  HttpClient& http_;
  SlackConfig config_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  Listener* listener_ = nullptr;
  bool active_ = false, connected_ = false, opening_ = false;
  int generation_ = 0;
  std::string bot_user_, bot_name_ = "jarvis", team_;
  std::vector<std::shared_ptr<Socket>> sockets_;
  // Events already handled, by event_id: a redelivery is acknowledged and ignored.
  std::set<std::string> seen_events_;
  std::deque<std::string> seen_order_;
  std::map<std::string, std::string> ims_;  // user id -> their direct-message channel
  std::set<std::string> speakers_;          // users the bot heard (and may address)
  std::deque<std::string> speakers_order_;  // bounded, like seen_events_
  // Sending, one call at a time and in order.
  std::deque<Outgoing> outgoing_;
  bool sending_ = false;
  Millis network_backoff_{1000};
  boost::asio::steady_timer send_timer_;
  std::map<std::string, std::string> progress_ts_;  // channel + "\n" + key -> message ts
  std::deque<std::string> progress_order_;          // oldest first, to keep the map bounded
};

}  // namespace jarvis
