#include "executor.h"

#include <algorithm>
#include <chrono>
#include <functional>

namespace ringflow {

namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Executor::Executor(Session& session, const Plan& plan, const FeedList& feeds,
                   tbb::task_arena& arena)
    : session_(session), plan_(plan), feeds_(feeds), arena_(arena), by_priority_{&plan} {
  values_.resize(static_cast<std::size_t>(plan.num_values));
  pending_ = std::make_unique<std::atomic<int>[]>(plan.nodes.size());
  for (std::size_t i = 0; i < plan.nodes.size(); ++i)
    pending_[i].store(plan.nodes[i].initial_pending, std::memory_order_relaxed);
  refs_ = std::make_unique<std::atomic<int>[]>(static_cast<std::size_t>(plan.num_values));
  for (int v = 0; v < plan.num_values; ++v)
    refs_[static_cast<std::size_t>(v)].store(plan.initial_refs[static_cast<std::size_t>(v)],
                                             std::memory_order_relaxed);
}

Executor::~Executor() {
  for (KernelContext* c : finished_async_) delete c;
}

std::vector<Tensor> Executor::run() {
  // Feeds are checked up front so a bad feed fails before anything runs.
  for (std::size_t i = 0; i < feeds_.size(); ++i)
    if (plan_.feed_plan_index[i] >= 0) check_feed(plan_.feed_plan_index[i]);

  const int total = static_cast<int>(plan_.nodes.size());
  arena_.execute([&] {
    for (int r : plan_.roots) tasks_.run([this, r] { process(r); });
    tasks_.wait();
  });
  for (;;) {
    if (completed_.load() == total) break;
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      return has_posted_.load() || outstanding_async_ == 0 ||
             (aborted_.load() && !abort_announced_ && session_.options_.on_abort);
    });
    const bool posted = has_posted_.load();
    const bool idle = outstanding_async_ == 0;
    const bool announce =
        aborted_.load() && !abort_announced_ && session_.options_.on_abort != nullptr;
    abort_announced_ = abort_announced_ || announce;
    lock.unlock();
    if (announce) {
      session_.options_.on_abort();
      continue;
    }
    if (posted) {
      arena_.execute([&] {
        drain_posted();
        tasks_.wait();
      });
      continue;
    }
    if (idle) {
      if (aborted_.load() || completed_.load() == total) break;
      RF_THROW(InternalError, "executor stalled with ", total - completed_.load(),
               " nodes not run; the plan has a dependency that never completes");
    }
  }
  if (error_) std::rethrow_exception(error_);

  std::vector<Tensor> out;
  out.reserve(plan_.fetch_values.size());
  for (int v : plan_.fetch_values) {
    Tensor t = values_[static_cast<std::size_t>(v)];
    // A fetched variable is copied: the caller's value must not change when
    // a later run updates the variable in place. Only a shared buffer can be
    // a variable's (the session holds one handle), so the common case, a
    // fresh intermediate such as the loss, skips the search.
    bool aliases_variable = false;
    if (t.valid() && t.use_count() > 1)
      for (const auto& [id, var] : session_.variables_)
        aliases_variable = aliases_variable || t.shares_storage_with(var);
    out.push_back(aliases_variable ? t.clone() : t);
  }
  return out;
}

RunStats Executor::stats() const {
  return {completed_.load(), max_running_.load()};
}

void Executor::process(int p) {
  // The nodes this thread will run itself, lowest priority first: async
  // hand-offs, then plan order, which is graph order. Autodiff creates
  // gradient nodes from the loss backwards, so this runs the last layer's
  // gradients (and hands their bucket to the communication thread) before
  // moving on to earlier layers.
  std::vector<int> local{p};
  while (!local.empty()) {
    std::pop_heap(local.begin(), local.end(), by_priority_);
    const int q = local.back();
    local.pop_back();
    execute(q, local);
    if (has_posted_.load(std::memory_order_acquire)) drain_posted();
  }
}

void Executor::execute(int p, std::vector<int>& local) {
  if (aborted_.load(std::memory_order_acquire)) return;
  const PlanNode& pn = plan_.nodes[static_cast<std::size_t>(p)];
  const Node& node = *pn.node;

  const int now_running = running_.fetch_add(1) + 1;
  int seen = max_running_.load();
  while (now_running > seen && !max_running_.compare_exchange_weak(seen, now_running)) {
  }
  const std::int64_t begin = session_.options_.on_node ? now_ns() : 0;

  auto ctx = std::make_unique<KernelContext>();
  ctx->node_ = &node;
  ctx->inputs_.reserve(pn.input_values.size());
  for (int v : pn.input_values) ctx->inputs_.push_back(&values_[static_cast<std::size_t>(v)]);
  ctx->exclusive_ = pn.input_exclusive;
  ctx->outputs_.resize(static_cast<std::size_t>(node.num_outputs()));
  ctx->variable_lookup_ = [this](int id) -> Tensor& { return session_.variable_by_id(id); };
  ctx->state_ = &session_.states_[static_cast<std::size_t>(node.id)];
  ctx->run_count_ = session_.run_counts_[static_cast<std::size_t>(node.id)];
  ctx->intra_op_threads_ = session_.num_threads_;
  ctx->user_context_ = session_.options_.user_context;

  auto record_event = [this, &node, begin] {
    if (session_.options_.on_node)
      session_.options_.on_node(
          {node.id, begin, now_ns(), tbb::this_task_arena::current_thread_index()});
  };

  if (pn.feed_index >= 0) {
    ctx->outputs_[0] = feeds_[static_cast<std::size_t>(pn.feed_index)].second;
  } else if (pn.def->async) {
    KernelContext* raw = ctx.release();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++outstanding_async_;
    }
    raw->done = [this, p, raw, record_event](std::exception_ptr e) {
      // The context (which holds this very function) is freed only after
      // the function has returned: see the deferred delete below.
      std::vector<int> ready;
      if (e) {
        record_error(e);
      } else {
        try {
          finish(p, *raw, ready);
        } catch (...) {
          record_error(std::current_exception());
        }
      }
      record_event();
      std::lock_guard<std::mutex> lock(mu_);
      if (!aborted_.load()) posted_.insert(posted_.end(), ready.begin(), ready.end());
      if (!posted_.empty()) has_posted_.store(true, std::memory_order_release);
      finished_async_.push_back(raw);
      --outstanding_async_;
      cv_.notify_all();
    };
    try {
      pn.def->kernel(*raw);
    } catch (...) {
      // The kernel failed before handing its work off: finish it here.
      raw->done(std::current_exception());
    }
    running_.fetch_sub(1);
    return;
  } else {
    try {
      pn.def->kernel(*ctx);
    } catch (...) {
      record_error(std::current_exception());
      running_.fetch_sub(1);
      return;
    }
  }
  std::vector<int> ready;
  try {
    finish(p, *ctx, ready);
  } catch (...) {
    record_error(std::current_exception());
    running_.fetch_sub(1);
    return;
  }
  record_event();
  running_.fetch_sub(1);
  schedule(ready, local);
}

void Executor::finish(int p, KernelContext& ctx, std::vector<int>& ready) {
  const PlanNode& pn = plan_.nodes[static_cast<std::size_t>(p)];
  const Node& node = *pn.node;
  for (int k = 0; k < node.num_outputs(); ++k) {
    Tensor& out = ctx.outputs_[static_cast<std::size_t>(k)];
    if (!out.valid())
      RF_THROW(InternalError, "op ", node.op, " '", node.name, "' did not produce output ", k);
    if (out.dtype() != node.out_dtypes[static_cast<std::size_t>(k)])
      RF_THROW(InternalError, "op ", node.op, " '", node.name, "' produced ", describe(out),
               " for an output declared ",
               dtype_name(node.out_dtypes[static_cast<std::size_t>(k)]));
    const int v = pn.first_value + k;
    // A value nobody consumes or fetches dies right away.
    if (refs_[static_cast<std::size_t>(v)].load(std::memory_order_relaxed) > 0)
      values_[static_cast<std::size_t>(v)] = std::move(out);
    else
      out = Tensor();
  }
  ctx.inputs_.clear();
  for (int v : pn.input_values)
    if (refs_[static_cast<std::size_t>(v)].fetch_sub(1, std::memory_order_acq_rel) == 1)
      values_[static_cast<std::size_t>(v)] = Tensor();  // the last consumer has run
  ++session_.run_counts_[static_cast<std::size_t>(node.id)];
  completed_.fetch_add(1, std::memory_order_acq_rel);
  for (int c : pn.consumers)
    if (pending_[static_cast<std::size_t>(c)].fetch_sub(1, std::memory_order_acq_rel) == 1)
      ready.push_back(c);
}

void Executor::schedule(const std::vector<int>& ready, std::vector<int>& local) {
  // Cheap and async nodes, and one expensive node, stay on this thread; the
  // other expensive ones become tasks for idle threads. With one thread
  // there is nobody to hand them to, so everything stays in local order.
  const bool alone = session_.num_threads_ <= 1;
  bool kept_expensive = false;
  for (int c : ready) {
    const PlanNode& pn = plan_.nodes[static_cast<std::size_t>(c)];
    const bool inline_ok =
        alone || pn.def->cheap || pn.def->async || pn.feed_index >= 0 || !kept_expensive;
    if (inline_ok) {
      if (!(pn.def->cheap || pn.def->async || pn.feed_index >= 0)) kept_expensive = true;
      local.push_back(c);
      std::push_heap(local.begin(), local.end(), by_priority_);
    } else {
      tasks_.run([this, c] { process(c); });
    }
  }
}

void Executor::drain_posted() {
  std::vector<int> posted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    posted.swap(posted_);
    has_posted_.store(false, std::memory_order_release);
  }
  for (int c : posted) tasks_.run([this, c] { process(c); });
}

void Executor::record_error(std::exception_ptr e) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!error_) error_ = e;
  aborted_.store(true, std::memory_order_release);
  cv_.notify_all();  // run() may be waiting on async nodes that now never complete
}

void Executor::check_feed(int p) const {
  const PlanNode& pn = plan_.nodes[static_cast<std::size_t>(p)];
  const Node& node = *pn.node;
  const Tensor& t = feeds_[static_cast<std::size_t>(pn.feed_index)].second;
  RF_CHECK(t.valid(), "feed for placeholder '", node.name, "' is an empty tensor");
  RF_CHECK(t.dtype() == node.out_dtypes[0], "feed for placeholder '", node.name, "' is ",
           describe(t), " but the placeholder is ", dtype_name(node.out_dtypes[0]),
           node.out_shapes[0].to_string());
  RF_CHECK(t.shape().compatible_with(node.out_shapes[0]), "feed for placeholder '", node.name,
           "' has shape ", t.shape().to_string(), " but the placeholder expects ",
           node.out_shapes[0].to_string());
}

}  // namespace ringflow
