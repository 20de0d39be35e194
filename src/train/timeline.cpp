#include "ringflow/train/timeline.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "ringflow/base/error.h"

namespace ringflow::train {

std::int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Timeline::add(TraceEvent e) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(e));
}

std::vector<TraceEvent> Timeline::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

void Timeline::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  events_.clear();
}

namespace {

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string Timeline::to_json_lines(int rank) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream os;
  os << "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" << rank << ",\"args\":{\"name\":\"rank "
     << rank << "\"}}\n";
  os << "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" << rank
     << ",\"tid\":100,\"args\":{\"name\":\"communication\"}}\n";
  char buf[64];
  for (const auto& e : events_) {
    // Chrome traces count microseconds.
    std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(e.begin_ns) / 1e3);
    os << "{\"name\":\"" << json_escape(e.name) << "\",\"cat\":\"" << e.category
       << "\",\"pid\":" << rank << ",\"tid\":" << e.thread << ",\"ts\":" << buf;
    if (e.end_ns > e.begin_ns) {
      std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(e.end_ns - e.begin_ns) / 1e3);
      os << ",\"ph\":\"X\",\"dur\":" << buf;
    } else {
      os << ",\"ph\":\"i\",\"s\":\"t\"";
    }
    if (!e.args.empty()) os << ",\"args\":{" << e.args << "}";
    os << "}\n";
  }
  return os.str();
}

void Timeline::write_trace(const std::string& path, const std::vector<std::string>& rank_lines) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    RF_CHECK_AS(IoError, f.good(), "--timeline: cannot write '", path,
                "'; check the directory exists and is writable");
    f << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
    bool first = true;
    for (const auto& lines : rank_lines) {
      std::istringstream in(lines);
      std::string line;
      while (std::getline(in, line)) {
        if (line.empty()) continue;
        if (!first) f << ",\n";
        f << line;
        first = false;
      }
    }
    f << "\n]}\n";
    RF_CHECK_AS(IoError, f.good(), "--timeline: writing '", path, "' failed");
  }
  RF_CHECK_AS(IoError, std::rename(tmp.c_str(), path.c_str()) == 0, "--timeline: cannot rename '",
              tmp, "' to '", path, "'");
}

}  // namespace ringflow::train
