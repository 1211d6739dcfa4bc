#include "bot/chat/slack/slack_adapter.h"

#include <openssl/ssl.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "bot/chat/chat_text.h"
#include "bot/util/json.h"
#include "bot/util/log.h"

namespace jarvis {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kMaxFrame = 1 << 20;      // an envelope is a few KB
constexpr size_t kSeenEvents = 5000;       // event ids remembered for de-duplication
constexpr size_t kSpeakers = 5000;         // people remembered as ones the bot may address
constexpr size_t kProgressMessages = 2000; // progress messages remembered for editing
constexpr size_t kMaxOutgoing = 5000;      // messages waiting to be sent
constexpr Millis kMaxNetworkBackoff{30000};

struct WssUrl {
  std::string host, port = "443", target = "/";
};

std::optional<WssUrl> parse_wss(const std::string& url) {
  if (url.rfind("wss://", 0) != 0) return std::nullopt;
  std::string rest = url.substr(6);
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  WssUrl u;
  if (slash != std::string::npos) u.target = rest.substr(slash);
  size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.back() != ']') {
    u.host = authority.substr(0, colon);
    u.port = authority.substr(colon + 1);
  } else {
    u.host = authority;
  }
  if (u.host.empty()) return std::nullopt;
  return u;
}

}  // namespace

std::string slack_unescape(std::string_view in) {
  // Links first: <https://x|label> and <https://x> become the URL; <@U1> mentions stay.
  std::string linked;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '<') {
      size_t end = in.find('>', i);
      if (end != std::string_view::npos) {
        std::string_view inner = in.substr(i + 1, end - i - 1);
        if (inner.rfind("http://", 0) == 0 || inner.rfind("https://", 0) == 0 || inner.rfind("mailto:", 0) == 0) {
          linked += std::string(inner.substr(0, inner.find('|')));
          i = end;
          continue;
        }
      }
    }
    linked += in[i];
  }
  std::string out;
  for (size_t i = 0; i < linked.size(); ++i) {
    if (linked.compare(i, 4, "&lt;") == 0) { out += '<'; i += 3; }
    else if (linked.compare(i, 4, "&gt;") == 0) { out += '>'; i += 3; }
    else if (linked.compare(i, 5, "&amp;") == 0) { out += '&'; i += 4; }
    else out += linked[i];
  }
  return out;
}

std::string slack_escape(std::string_view in, std::string_view addressee) {
  std::string out;
  out.reserve(in.size());
  size_t i = 0;
  if (!addressee.empty()) {
    std::string mention = "<@" + std::string(addressee) + ">";
    if (in.substr(0, mention.size()) == mention) {
      out += mention;
      i = mention.size();
    }
  }
  for (; i < in.size(); ++i) {
    char c = in[i];
    if (c == '<' && in.compare(i, 2, "<@") == 0) {
      // Any other mention is shown as plain @U123: visible, and it notifies nobody.
      size_t end = i + 2;
      while (end < in.size() && std::isalnum(static_cast<unsigned char>(in[end]))) ++end;
      if (end < in.size() && in[end] == '>' && end > i + 2) {
        out += "@";
        out += in.substr(i + 2, end - i - 2);
        i = end;
        continue;
      }
    }
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else out += c;
  }
  return out;
}

struct SlackAdapter::Socket {
  Socket(asio::io_context& io, asio::ssl::context& tls, int id_) : resolver(io), ws(io, tls), id(id_) {}
  tcp::resolver resolver;
  websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws;
  beast::flat_buffer buffer;
  std::deque<std::string> writes;
  bool writing = false, hello = false, retiring = false, closed = false;
  int id;
};

SlackAdapter::SlackAdapter(asio::io_context& io, HttpClient& http, SlackConfig config)
    : io_(io), http_(http), config_(std::move(config)),
      tls_(std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client)), send_timer_(io) {
  tls_->set_verify_mode(asio::ssl::verify_peer);
  if (!config_.ca_file.empty()) tls_->load_verify_file(config_.ca_file);
  else tls_->set_default_verify_paths();
  if (config_.api_url.empty() || config_.api_url.back() != '/') config_.api_url += '/';
}

SlackAdapter::~SlackAdapter() {
  active_ = false;
  ++generation_;
  for (auto& s : sockets_) {
    boost::system::error_code ignored;
    beast::get_lowest_layer(s->ws).socket().close(ignored);
  }
}

void SlackAdapter::api(const std::string& method, const std::string& token, const std::string& json, ApiDone done) {
  HttpRequest r;
  r.method = "POST";
  r.url = config_.api_url + method;
  r.headers = {"Authorization: Bearer " + token, "Content-Type: application/json; charset=utf-8"};
  r.body = json;
  r.ca_file = config_.ca_file;
  r.allow_http = false;
  r.max_bytes = 1 << 20;
  r.timeout = Millis(20000);
  http_.fetch(std::move(r), [method, done = std::move(done)](HttpResponse resp) {
    if (resp.status == 429) return done(nullptr, "rate limited", resp.retry_after_s.value_or(1));
    if (!resp.error.empty()) return done(nullptr, resp.error, std::nullopt);
    if (resp.status != 200) return done(nullptr, "HTTP " + std::to_string(resp.status), std::nullopt);
    YAML::Node answer;
    try {
      answer = parse_json_object(resp.body, 1 << 20);
    } catch (const std::exception& e) {
      return done(nullptr, method + ": not JSON: " + e.what(), std::nullopt);
    }
    if (json_text(answer, "ok") != "true") {
      std::string error = json_text(answer, "error");
      return done(nullptr, error.empty() ? "not ok" : error, std::nullopt);
    }
    done(&answer, {}, std::nullopt);
  });
}

void SlackAdapter::connect() {
  if (active_) return;
  active_ = true;
  int gen = ++generation_;
  api("auth.test", config_.bot_token, "{}", [this, gen](const YAML::Node* a, const std::string& error, std::optional<long>) {
    if (gen != generation_) return;
    if (!a) return teardown("auth.test failed: " + error + " (check slack.bot_token)");
    bot_user_ = json_text(*a, "user_id");
    team_ = json_text(*a, "team_id");
    if (!json_text(*a, "user").empty()) bot_name_ = json_text(*a, "user");
    log::info(log::kNoJob, "slack: bot {} ({}) in team {}", bot_name_, bot_user_, team_);
    open_socket();
  });
}

void SlackAdapter::check_tokens(std::function<void(const std::string& error)> done) {
  api("auth.test", config_.bot_token, "{}", [this, done](const YAML::Node* a, const std::string& error, std::optional<long>) {
    if (!a) return done("auth.test failed: " + error + " (check slack.bot_token)");
    if (!json_text(*a, "user").empty()) bot_name_ = json_text(*a, "user");
    api("apps.connections.open", config_.app_token, "{}", [done](const YAML::Node* b, const std::string& error, std::optional<long>) {
      done(b ? std::string() : "apps.connections.open failed: " + error + " (check slack.app_token)");
    });
  });
}

void SlackAdapter::open_socket() {
  if (opening_) return;
  opening_ = true;
  int gen = generation_;
  api("apps.connections.open", config_.app_token, "{}",
      [this, gen](const YAML::Node* a, const std::string& error, std::optional<long> retry_after) {
    if (gen != generation_) return;
    opening_ = false;
    if (!a) {
      std::string why = "apps.connections.open failed: " + error + (retry_after ? "" : " (check slack.app_token)");
      if (connected_) {  // a refresh that failed: the old socket still serves; try again soon
        log::warn(log::kNoJob, "slack: {}", why);
        return;
      }
      return teardown(why);
    }
    auto url = parse_wss(json_text(*a, "url"));
    if (!url) return teardown("apps.connections.open gave no wss:// URL");
    static int next_id = 0;
    auto s = std::make_shared<Socket>(io_, *tls_, ++next_id);
    sockets_.push_back(s);
    opening_ = true;
    s->resolver.async_resolve(url->host, url->port, [this, gen, s, url = *url](const boost::system::error_code& ec,
                                                                                 tcp::resolver::results_type results) {
      if (gen != generation_) return;
      if (ec) return socket_closed(s, "cannot resolve " + url.host + ": " + ec.message());
      beast::get_lowest_layer(s->ws).expires_after(std::chrono::seconds(20));
      beast::get_lowest_layer(s->ws).async_connect(results, [this, gen, s, url](const boost::system::error_code& ec,
                                                                                 const tcp::endpoint&) {
        if (gen != generation_) return;
        if (ec) return socket_closed(s, "cannot connect: " + ec.message());
        // SNI, and the certificate must name the host we asked for.
        SSL_set_tlsext_host_name(s->ws.next_layer().native_handle(), url.host.c_str());
        s->ws.next_layer().set_verify_callback(asio::ssl::host_name_verification(url.host));
        s->ws.next_layer().async_handshake(asio::ssl::stream_base::client, [this, gen, s, url](const boost::system::error_code& ec) {
          if (gen != generation_) return;
          if (ec) return socket_closed(s, "TLS failed: " + ec.message());
          beast::get_lowest_layer(s->ws).expires_never();
          websocket::stream_base::timeout t{};
          t.handshake_timeout = std::chrono::seconds(20);
          t.idle_timeout = config_.ping_interval;
          t.keep_alive_pings = true;
          s->ws.set_option(t);
          s->ws.read_message_max(kMaxFrame);
          s->ws.async_handshake(url.host, url.target, [this, gen, s](const boost::system::error_code& ec) {
            if (gen != generation_) return;
            if (ec) return socket_closed(s, "WebSocket handshake failed: " + ec.message());
            // Read frames until the socket closes.
            auto read = std::make_shared<std::function<void()>>();
            *read = [this, gen, s, read] {
              s->ws.async_read(s->buffer, [this, gen, s, read](const boost::system::error_code& ec, size_t) {
                if (gen != generation_ || ec) {
                  *read = nullptr;  // break the cycle
                  if (gen != generation_) return;
                  return socket_closed(s, ec == websocket::error::closed ? "closed by Slack" : ec.message());
                }
                std::string text = beast::buffers_to_string(s->buffer.data());
                s->buffer.consume(s->buffer.size());
                handle_frame(s, text);
                if (!s->closed) (*read)();
              });
            };
            (*read)();
          });
        });
      });
    });
  });
}

void SlackAdapter::handle_frame(const std::shared_ptr<Socket>& s, const std::string& text) {
  // One frame that jarvis cannot handle costs that frame, never the connection or serve.
  try {
    socket_frame(s, text);
  } catch (const std::exception& e) {
    log::error(log::kNoJob, "slack: a frame failed inside jarvis ({}); ignored it: {}", e.what(),
               std::string_view(text).substr(0, 200));
  }
}

void SlackAdapter::socket_frame(const std::shared_ptr<Socket>& s, const std::string& text) {
  YAML::Node frame;
  try {
    frame = parse_json_object(text, kMaxFrame);
  } catch (const std::exception& e) {
    log::warn(log::kNoJob, "slack: ignoring a frame that is not JSON: {}", e.what());
    return;
  }
  // Acknowledge first: Slack resends what is not acknowledged within a few seconds.
  if (std::string envelope = json_text(frame, "envelope_id"); !envelope.empty()) {
    s->writes.push_back("{\"envelope_id\":" + json_quote(envelope) + "}");
    auto write = std::make_shared<std::function<void()>>();
    *write = [this, s, write, gen = generation_] {
      if (s->writing || s->writes.empty() || s->closed) {
        *write = nullptr;
        return;
      }
      s->writing = true;
      s->ws.text(true);
      s->ws.async_write(asio::buffer(s->writes.front()), [this, s, write, gen](const boost::system::error_code& ec, size_t) {
        s->writing = false;
        if (gen != generation_ || ec) {
          *write = nullptr;
          return;  // the read side reports the closed socket
        }
        s->writes.pop_front();
        (*write)();
      });
    };
    (*write)();
  }
  std::string type = json_text(frame, "type");
  if (type == "hello") {
    s->hello = true;
    opening_ = false;
    // A refresh is complete: the sockets Slack asked us to leave can go now.
    for (auto& old : sockets_) {
      if (old != s && old->retiring && !old->closed) {
        old->closed = true;
        old->ws.async_close(websocket::close_code::normal, [old](const boost::system::error_code&) {});
      }
    }
    if (!connected_) {
      connected_ = true;
      network_backoff_ = Millis(1000);
      log::info(log::kNoJob, "slack: connected (Socket Mode, connection {})", s->id);
      if (listener_) listener_->on_connected();
      pump();
    }
  } else if (type == "disconnect") {
    std::string reason = json_text(frame, "reason");
    log::info(log::kNoJob, "slack: Slack asks to reconnect ({}); opening a new connection first", reason);
    s->retiring = true;
    open_socket();
  } else if (type == "events_api") {
    const YAML::Node& f = frame;
    const YAML::Node payload = f["payload"];
    if (!payload || !payload.IsMap()) {
      log::warn(log::kNoJob, "slack: an events_api frame without a payload; ignored");
      return;
    }
    std::string event_id = json_text(payload, "event_id");
    if (!event_id.empty()) {
      if (seen_events_.count(event_id)) {
        log::info(log::kNoJob, "slack: event {} delivered again (retry {}); already handled", event_id,
                  json_text(frame, "retry_attempt"));
        return;
      }
      seen_events_.insert(event_id);
      seen_order_.push_back(event_id);
      if (seen_order_.size() > kSeenEvents) {
        seen_events_.erase(seen_order_.front());
        seen_order_.pop_front();
      }
    }
    if (payload["event"] && payload["event"].IsMap()) handle_event(payload["event"]);
  }
}

void SlackAdapter::handle_event(const YAML::Node& event) {
  std::string type = json_text(event, "type");
  std::string user = json_text(event, "user");
  std::string channel = json_text(event, "channel");
  // Messages from bots (this one included) and edits are not commands.
  if (user.empty() || user == bot_user_ || !json_text(event, "bot_id").empty() || !json_text(event, "subtype").empty())
    return;
  ChatMessage m;
  m.sender.protocol = "slack";
  m.sender.name = "<@" + user + ">";  // how Slack renders a mention
  // The user's own team: in a Slack Connect channel people of other organisations speak too,
  // and must never match the home team's slack:T.../* rules. `team` is only trusted when it
  // is the home team (in shared channels it can be the channel's, not the user's).
  std::string team = json_text(event, "user_team");
  if (team.empty() && !team_.empty() && json_text(event, "team") == team_) team = team_;
  if (team.empty()) {
    m.sender.full = "?/" + user;
    m.sender.anonymous = true;  // a team we cannot tell: open commands only
  } else {
    m.sender.full = team + "/" + user;
  }
  std::string text = slack_unescape(json_text(event, "text"));
  if (type == "app_mention") {
    // "<@UBOT> status loki" -> "jarvis: status loki", so the front sees it addressed.
    std::string mention = "<@" + bot_user_ + ">";
    if (auto at = text.find(mention); at != std::string::npos) text.replace(at, mention.size(), bot_name_ + ":");
    m.room = channel;
    // Asked in a thread: the answer goes there, not into the channel. Slack's ts is
    // digits and one dot; anything else is not used as a target.
    std::string thread = json_text(event, "thread_ts");
    if (!thread.empty() && thread.size() <= 32 &&
        thread.find_first_not_of("0123456789.") == std::string::npos)
      m.reply_target = channel + "/" + thread;
  } else if (type == "message" && json_text(event, "channel_type") == "im") {
    if (ims_.size() >= kSpeakers && !ims_.count(user)) ims_.clear();  // bounded; re-learnt from the next DM
    ims_[user] = channel;
  } else {
    return;  // channel messages arrive as app_mention too; handling both would run them twice
  }
  m.text = text;
  remember_speaker(user);
  if (listener_) listener_->on_message(m);
}

void SlackAdapter::remember_speaker(const std::string& user) {
  if (!speakers_.insert(user).second) return;
  speakers_order_.push_back(user);
  if (speakers_order_.size() > kSpeakers) {
    speakers_.erase(speakers_order_.front());
    speakers_order_.pop_front();
  }
}

std::string SlackAdapter::slack_text(const std::string& line) const {
  std::string_view v = line;
  std::string addressee;
  if (v.rfind("<@", 0) == 0) {
    if (auto end = v.find('>'); end != std::string_view::npos) addressee = v.substr(2, end - 2);
  }
  return slack_escape(chat_safe_text(line), speakers_.count(addressee) ? std::string_view(addressee) : std::string_view());
}

void SlackAdapter::socket_closed(const std::shared_ptr<Socket>& s, const std::string& reason) {
  bool had_hello = s->hello;
  s->closed = true;
  std::erase(sockets_, s);
  if (!had_hello) opening_ = false;
  bool alive = std::any_of(sockets_.begin(), sockets_.end(), [](const auto& o) { return o->hello && !o->closed; });
  if (alive) {
    log::info(log::kNoJob, "slack: connection {} closed ({}); another one serves", s->id, reason);
    return;
  }
  if (opening_) return;  // a refresh is on its way
  teardown(reason);
}

void SlackAdapter::disconnect() {
  if (!active_) return;
  for (auto& s : sockets_) {
    s->closed = true;
    s->ws.async_close(websocket::close_code::normal, [s](const boost::system::error_code&) {});
  }
  teardown("disconnected");
}

void SlackAdapter::teardown(const std::string& reason) {
  if (!active_) return;
  active_ = false;
  bool was = connected_;
  connected_ = false;
  opening_ = false;
  ++generation_;
  for (auto& s : sockets_) {
    boost::system::error_code ignored;
    s->closed = true;
    beast::get_lowest_layer(s->ws).socket().close(ignored);
  }
  sockets_.clear();
  log::warn(log::kNoJob, "slack: {}{}", was ? "disconnected: " : "cannot connect: ", reason);
  if (listener_) listener_->on_disconnected(reason);
}

std::string SlackAdapter::channel_for(const std::string& target) const {
  // "<@U123>" (a person): their direct-message channel, or the user id, which Slack accepts.
  if (target.size() > 3 && target.rfind("<@", 0) == 0 && target.back() == '>') {
    std::string user = target.substr(2, target.size() - 3);
    auto it = ims_.find(user);
    return it != ims_.end() ? it->second : user;
  }
  return target;
}

void SlackAdapter::send(const std::string& target, const std::string& line) {
  // "C0OPS/1700000000.000100": a reply in the thread the command was asked in.
  if (auto slash = target.find('/'); slash != std::string::npos)
    return enqueue({channel_for(target.substr(0, slash)), line, "", target.substr(slash + 1)});
  enqueue({channel_for(target), line, ""});
}

bool SlackAdapter::update_in_place(const std::string& target, const std::string& key, const std::string& line) {
  std::string channel = channel_for(target);
  // A newer state of the same progress message replaces one still waiting to go out.
  for (auto it = outgoing_.begin() + (sending_ ? 1 : 0); it < outgoing_.end(); ++it) {
    if (it->key == key && it->channel == channel) {
      it->text = line;
      return true;
    }
  }
  enqueue({channel, line, key});
  return true;
}

void SlackAdapter::enqueue(Outgoing o) {
  if (outgoing_.size() >= kMaxOutgoing) {
    // Far behind (Slack refusing us for a long time): the oldest waiting message goes.
    log::warn(log::kNoJob, "slack: {} messages waiting; dropping the oldest", outgoing_.size());
    outgoing_.erase(outgoing_.begin() + (sending_ ? 1 : 0));
  }
  outgoing_.push_back(std::move(o));
  pump();
}

void SlackAdapter::retry_later(Millis delay) {
  send_timer_.expires_after(delay);
  send_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    sending_ = false;
    pump();
  });
}

void SlackAdapter::pump() {
  if (sending_ || outgoing_.empty()) return;
  sending_ = true;
  const Outgoing& o = outgoing_.front();
  std::string id = o.channel + "\n" + o.key;
  auto ts = o.key.empty() ? progress_ts_.end() : progress_ts_.find(id);
  bool update = ts != progress_ts_.end();
  std::string json = "{\"channel\":" + json_quote(o.channel) + ",\"text\":" + json_quote(slack_text(o.text));
  if (update) json += ",\"ts\":" + json_quote(ts->second);
  else if (!o.thread_ts.empty()) json += ",\"thread_ts\":" + json_quote(o.thread_ts);
  json += "}";
  api(update ? "chat.update" : "chat.postMessage", config_.bot_token, json,
      [this, id, update](const YAML::Node* a, const std::string& error, std::optional<long> retry_after) {
    if (retry_after) {  // 429: Slack says when; the message waits, nothing is dropped
      log::warn(log::kNoJob, "slack: rate limited; sending again in {}s ({} queued)", *retry_after, outgoing_.size());
      return retry_later(Millis(*retry_after * 1000));
    }
    if (!a && (error.rfind("HTTP 5", 0) == 0 || error.find("connect") != std::string::npos ||
               error.find("timed out") != std::string::npos || error.find("resolve") != std::string::npos)) {
      log::warn(log::kNoJob, "slack: cannot send ({}); retrying in {}", error, format_duration(network_backoff_));
      Millis delay = network_backoff_;
      network_backoff_ = std::min(network_backoff_ * 2, kMaxNetworkBackoff);
      return retry_later(delay);
    }
    network_backoff_ = Millis(1000);
    Outgoing done = std::move(outgoing_.front());
    outgoing_.pop_front();
    if (!a) {
      log::error(log::kNoJob, "slack: {} to {} refused: {}; dropped", update ? "chat.update" : "chat.postMessage",
                 done.channel, error);
      if (listener_) listener_->on_refused(done.channel, error);
      if (update) progress_ts_.erase(id);  // the message is gone: the next state posts anew
    } else if (!done.key.empty() && !update) {
      progress_ts_[id] = json_text(*a, "ts");
      progress_order_.push_back(id);
      if (progress_order_.size() > kProgressMessages) {  // an old job's message is not edited again
        progress_ts_.erase(progress_order_.front());
        progress_order_.pop_front();
      }
    }
    sending_ = false;
    pump();
  });
}

}  // namespace jarvis
