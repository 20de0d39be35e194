#include "ringflow/runtime/session.h"

#include <sched.h>

#include <tbb/info.h>
#include <tbb/task_arena.h>
#include <xmmintrin.h>

#include "executor.h"
#include "plan.h"
#include "ringflow/ops/ops.h"

namespace ringflow {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return std::max(1, tbb::info::default_concurrency());
}

namespace {

// Sets FTZ/DAZ on the calling thread while it lives and then restores the
// thread's previous MXCSR: the caller's own floating-point mode is left alone.
class FlushDenormalsHere {
 public:
  explicit FlushDenormalsHere(bool on) : saved_(_mm_getcsr()), on_(on) {
    if (on_) _mm_setcsr(saved_ | kFtzDaz);
  }
  ~FlushDenormalsHere() {
    if (on_) _mm_setcsr(saved_);
  }
  FlushDenormalsHere(const FlushDenormalsHere&) = delete;
  FlushDenormalsHere& operator=(const FlushDenormalsHere&) = delete;

 private:
  static constexpr unsigned kFtzDaz = 0x8040;  // MXCSR flush-to-zero | denormals-are-zero
  unsigned saved_;
  bool on_;
};

}  // namespace

// Denormal floats (tiny gradients early in training) are 10-100x slower on
// x86; flushing them to zero is what training frameworks do. The arena's
// default task context captures the floating-point settings of the thread
// that initialises it, and every task of the arena runs with them on any
// thread, so FTZ/DAZ set here reaches every kernel.
struct Session::ArenaHolder {
  ArenaHolder(int n, bool flush) : arena(n) {
    FlushDenormalsHere ftz(flush);
    arena.initialize();
  }
  tbb::task_arena arena;
};

Session::Session(Graph& graph, SessionOptions options)
    : graph_(graph), options_(std::move(options)) {
  ops::ensure_registered();
  RF_CHECK(options_.num_threads >= 0, "Session: num_threads ", options_.num_threads,
           " must be >= 0 (0 = every core this process may use)");
  num_threads_ = options_.num_threads > 0 ? options_.num_threads : available_cores();
  arena_ = std::make_unique<ArenaHolder>(num_threads_, options_.flush_denormals);
}

Session::~Session() = default;

std::vector<Tensor> Session::run(const std::vector<Output>& fetches, const FeedList& feeds,
                                 const std::vector<Output>& targets) {
  std::lock_guard<std::mutex> lock(run_mu_);
  const Plan& plan = plan_for(fetches, feeds, targets);
  Executor exec(*this, plan, feeds, arena_->arena);
  try {
    auto out = exec.run();
    stats_ = exec.stats();
    return out;
  } catch (...) {
    stats_ = exec.stats();
    throw;
  }
}

const Plan& Session::plan_for(const std::vector<Output>& fetches, const FeedList& feeds,
                              const std::vector<Output>& targets) {
  const std::string key = Plan::key(fetches, feeds, targets);
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto plan = std::make_unique<Plan>(graph_, fetches, feeds, targets);
  // Everything the executor indexes by node id must exist before it runs:
  // per-node counters and states, and the variables the plan touches.
  const auto n = static_cast<std::size_t>(graph_.num_nodes());
  if (run_counts_.size() < n) run_counts_.resize(n, 0);
  if (states_.size() < n) states_.resize(n);
  for (const auto& p : plan->nodes)
    if (p.node->op == "Variable") variable_by_id(p.node->id);
  return *(plans_[key] = std::move(plan));
}

Tensor& Session::variable_by_id(int node_id) {
  auto it = variables_.find(node_id);
  if (it != variables_.end()) return it->second;
  const Node& node = graph_.node(node_id);
  RF_CHECK(node.op == "Variable", "'", node.name, "' is a ", node.op, ", not a variable");
  Tensor value = node.attrs.get<Initializer>("init").make(node.attrs.get<Shape>("shape"));
  return variables_.emplace(node_id, std::move(value)).first->second;
}

Tensor& Session::variable(Output var) {
  RF_CHECK(var.valid() && &var.graph() == &graph_,
           "variable(): not a node of this session's graph");
  return variable_by_id(var.node_id());
}

Tensor& Session::variable(const std::string& name) {
  return variable_by_id(graph_.node_by_name(name).id);
}

std::vector<std::pair<std::string, Tensor*>> Session::variables() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (const auto& v : graph_.variables()) out.emplace_back(v.name(), &variable_by_id(v.node_id()));
  return out;
}

void Session::reset_variables() {
  for (auto& [id, t] : variables_) {
    const Node& node = graph_.node(id);
    t.copy_from(node.attrs.get<Initializer>("init").make(node.attrs.get<Shape>("shape")));
  }
}

std::uint64_t Session::run_count(int node_id) const {
  const auto k = static_cast<std::size_t>(node_id);
  return k < run_counts_.size() ? run_counts_[k] : 0;
}

}  // namespace ringflow
