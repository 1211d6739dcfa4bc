#pragma once
// Walks: pipelines with a schedule (`schedule: {every: 5m}`, `targets:`) run on their own over
// the ready hosts, as workers like any other but outside the job table: a walk takes no host
// lock and never changes a clipboard. A host being deployed is not walked (a deploy that
// starts stops its walk). After downtime a walk runs once, not once per missed interval. Its
// result is announced only when it changes (failing, then recovered).
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/pipeline/engine.h"
#include "bot/pipeline/pipeline.h"
#include "bot/pipeline/worker_runner.h"
#include "bot/store/job_store.h"

namespace jarvis {

class Walker {
 public:
  using Hosts = std::function<std::vector<std::string>()>;  // the hosts a walk may visit
  Walker(boost::asio::io_context& io, JobStore& store, WorkerRunner& runner,
         const PipelineSet& pipelines, Engine& engine, Hosts hosts);
  ~Walker();
  void start();
  void stop();
  size_t walks() const { return walks_.size(); }

 private:
  struct Walk;
  void schedule(Walk& w, Millis delay);
  void round(Walk& w);
  void next_host(Walk& w);
  void run_task(Walk& w);
  void host_done(Walk& w, bool ok, const std::string& reason);
  void on_event(const EngineEvent& e);

  boost::asio::io_context& io_;
  JobStore& store_;
  WorkerRunner& runner_;
  const PipelineSet& pipelines_;
  Engine& engine_;
  Hosts hosts_;
  bool stopping_ = false;
  std::vector<std::unique_ptr<Walk>> walks_;
};

// The `walks` answer: each walk with its schedule, each host's last result, and the next run.
std::vector<std::string> walk_lines(const PipelineSet& pipelines, const std::vector<WalkState>& states,
                                    int64_t now);

}  // namespace jarvis
