// A Chrome-trace timeline (opens in Perfetto and chrome://tracing): every
// rank's op executions, bucket readiness and allreduces, one process per
// rank. Horovod's timeline idea.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace ringflow::train {

struct TraceEvent {
  std::string name;
  std::string category;  // "op", "backward", "bucket", "allreduce", "step", "eval"
  std::int64_t begin_ns;
  std::int64_t end_ns;  // == begin_ns for an instant event
  int thread;           // lane within the rank: 0.. executor threads, 100 = comm thread
  std::string args;     // pre-rendered JSON object body, may be empty
};

// Thread-safe event sink. Disabled sinks drop everything cheaply.
class Timeline {
 public:
  explicit Timeline(bool enabled = false) : enabled_(enabled) {}
  bool enabled() const { return enabled_; }
  void set_enabled(bool on) { enabled_ = on; }
  void add(TraceEvent e);
  std::vector<TraceEvent> events() const;
  void clear();

  // This rank's events as Chrome-trace JSON objects, one per line, for merging.
  std::string to_json_lines(int rank) const;
  // Writes a complete trace file from the JSON lines of every rank.
  static void write_trace(const std::string& path, const std::vector<std::string>& rank_lines);

 private:
  bool enabled_;
  mutable std::mutex mu_;
  std::vector<TraceEvent> events_;
};

std::int64_t steady_now_ns();

}  // namespace ringflow::train
