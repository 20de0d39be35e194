#include "ringflow/train/reducer.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ringflow/ops/ops.h"

namespace ringflow::train {

namespace {

// True when every value is finite: the exponent bits of NaN and Inf are all
// ones. Integer tests, so the loop vectorises without fast-math.
bool all_finite(std::span<const float> v) {
  std::uint32_t bad = 0;
  for (float x : v)
    bad |=
        static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(x) & 0x7f800000u) == 0x7f800000u);
  return bad == 0;
}

}  // namespace

void register_train_ops() {
  static const bool registered = [] {
    ops::ensure_registered();
    OpRegistry::global().add(
        {.name = "AllreduceBucket",
         // outputs mirror the inputs: averaged gradient k has gradient k's shape
         .shape_fn =
             [](ShapeContext& c) {
               for (int i = 0; i < c.num_inputs(); ++i) c.set_output(i, DType::f32, c.in_shape(i));
             },
         .kernel =
             [](KernelContext& c) {
               auto* reducer = static_cast<GradientReducer*>(c.user_context());
               if (!reducer)
                 c.fail(
                     "no gradient reducer: run this graph with SessionOptions::user_context set to "
                     "GradientReducer::context()");
               reducer->submit(static_cast<int>(c.attrs().get_int("bucket")), c);
             },
         .no_gradient = true,
         .async = true});
    return true;
  }();
  (void)registered;
}

GradientReducer::GradientReducer(collectives::Communicator& comm, ReducerOptions options,
                                 Timeline* timeline)
    : comm_(comm), options_(options), timeline_(timeline) {
  register_train_ops();
  RF_CHECK(options_.fusion_bytes >= sizeof(float), "--fusion-mb must be positive");
  // Benchmark-only: RINGFLOW_BENCH_SKIP_ALLREDUCE=1 skips the collectives
  // (replicas then diverge) so a benchmark can measure the step without
  // communication and report the exposed communication time.
  const char* skip = std::getenv("RINGFLOW_BENCH_SKIP_ALLREDUCE");
  skip_allreduce_ = skip != nullptr && std::string(skip) == "1";
  // With overlap off the executor thread reduces every bucket (submit).
  if (options_.overlap) thread_ = std::thread([this] { loop(); });
}

GradientReducer::~GradientReducer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<GradAndVar> GradientReducer::add_to_graph(Graph& g, const std::vector<GradAndVar>& gv) {
  RF_CHECK(buckets_.empty(), "GradientReducer::add_to_graph called twice");
  // Backward creates gradient nodes from the loss towards the inputs, so a
  // smaller node id means "ready earlier": that is the bucket order.
  std::vector<int> order(gv.size());
  for (std::size_t i = 0; i < gv.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return gv[static_cast<std::size_t>(a)].grad.node_id() <
           gv[static_cast<std::size_t>(b)].grad.node_id();
  });
  // Small gradients are packed together up to the fusion size; a large one
  // (>= kOwnBucketBytes) gets a bucket of its own, closing the open one
  // first so bucket order stays readiness order. A bucket of one gradient
  // is reduced in place, with no packing copies.
  std::vector<int> current;
  std::size_t current_bytes = 0;
  auto close = [&] {
    if (!current.empty()) bucket_members_.push_back(current);
    current.clear();
    current_bytes = 0;
  };
  for (int i : order) {
    const std::size_t bytes =
        static_cast<std::size_t>(gv[static_cast<std::size_t>(i)].var.shape().num_elements()) *
        sizeof(float);
    if (bytes >= kOwnBucketBytes) {
      close();
      bucket_members_.push_back({i});
      continue;
    }
    if (!current.empty() && current_bytes + bytes > options_.fusion_bytes) close();
    current.push_back(i);
    current_bytes += bytes;
  }
  close();

  std::vector<GradAndVar> out = gv;
  for (const auto& pair : gv) var_names_.push_back(pair.var.name());
  nonfinite_.assign(gv.size(), 0);
  buckets_.resize(bucket_members_.size());
  for (std::size_t b = 0; b < bucket_members_.size(); ++b) {
    std::vector<Output> inputs;
    Bucket& bucket = buckets_[b];
    std::int64_t offset = 0;
    for (int i : bucket_members_[b]) {
      const auto& pair = gv[static_cast<std::size_t>(i)];
      inputs.push_back(pair.grad);
      bucket.offsets.push_back(offset);
      const Shape& shape = pair.var.shape();
      bucket.outputs.push_back(Tensor::zeros(DType::f32, shape));
      offset += shape.num_elements();
    }
    // Allocated once, on first use (a one-gradient bucket usually needs none).
    bucket.fusion_floats = static_cast<std::size_t>(offset);
    Node& node = g.add_node("AllreduceBucket", inputs, {{"bucket", static_cast<std::int64_t>(b)}},
                            "allreduce/bucket" + std::to_string(b));
    for (std::size_t k = 0; k < bucket_members_[b].size(); ++k)
      out[static_cast<std::size_t>(bucket_members_[b][k])].grad = node.output(static_cast<int>(k));
  }
  return out;
}

void GradientReducer::submit(int b, KernelContext& ctx) {
  RF_CHECK_AS(InternalError, b >= 0 && b < static_cast<int>(buckets_.size()),
              "unknown gradient bucket ", b);
  Bucket& bucket = buckets_[static_cast<std::size_t>(b)];
  if (comm_.size() == 1) {
    // One rank: the average of one gradient is itself. Pass the tensors
    // through, with no copies and no trip to the communication thread.
    for (int k = 0; k < ctx.num_inputs(); ++k) ctx.set_output(k, ctx.input(k));
    check_finite(b, {}, &ctx);
    ctx.done(nullptr);
    return;
  }
  // One gradient that nothing else reads: reduce it where it is.
  bucket.in_place = ctx.num_inputs() == 1 && ctx.can_overwrite_input(0);
  if (!bucket.in_place && bucket.fusion.size() != bucket.fusion_floats)
    bucket.fusion.assign(bucket.fusion_floats, 0.0f);
  // Pack: fusion[offset_k ...] = gradient k
  for (int k = 0; k < ctx.num_inputs() && !bucket.in_place; ++k) {
    const Tensor& g = ctx.input(k);
    RF_CHECK_AS(InternalError,
                g.num_elements() == bucket.outputs[static_cast<std::size_t>(k)].num_elements(),
                "bucket ", b, " gradient ", k, " changed size");
    if (g.num_elements() > 0)
      std::memcpy(bucket.fusion.data() + bucket.offsets[static_cast<std::size_t>(k)],
                  g.data<float>(), g.num_bytes());
  }
  if (timeline_ && timeline_->enabled())
    timeline_->add({"bucket" + std::to_string(b) + " ready", "bucket", steady_now_ns(),
                    steady_now_ns(), 100, "\"floats\":" + std::to_string(bucket.fusion_floats)});
  int first = -1;  // this thread reduces buckets [first, n) itself
  const int n = static_cast<int>(buckets_.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    bucket.pending = &ctx;
    ++submitted_;
    // The step's last hand-over, with the communication thread idle: no
    // backward is left to overlap, so this thread reduces what is left
    // itself, in bucket order. That spares two thread wake-ups on the
    // step's critical path (the communication thread's, then the
    // executor's for the apply ops), each tens of microseconds when ranks
    // share cores. With overlap off this is every bucket.
    if (submitted_ == n && !comm_busy_) {
      first = next_;
      reducing_here_ = true;
    }
  }
  if (first < 0) {
    cv_.notify_all();
    return;
  }
  for (int k = first; k < n; ++k)
    reduce_and_finish(k, buckets_[static_cast<std::size_t>(k)].pending);
}

void GradientReducer::reduce_and_finish(int b, KernelContext* ctx) {
  std::exception_ptr error;
  try {
    reduce(b);
  } catch (...) {
    error = std::current_exception();
  }
  complete(b);
  // Completing the node may start the apply ops on this thread's behalf
  // (they are posted to the executor), so call it without our lock.
  ctx->done(error);
}

void GradientReducer::abort_step() {
  std::vector<std::pair<int, KernelContext*>> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int n = static_cast<int>(buckets_.size());
    // An executor thread reducing the step's last buckets reduces them all,
    // and its last one starts the next step at bucket 0.
    if (reducing_here_ || n == 0) return;
    // With overlap on, the communication thread goes on with the run of
    // handed-over buckets from next_, as the other ranks' do. Buckets past
    // that run wait for one that never comes, and with overlap off nothing
    // has started: those are completed with an error.
    int reachable = next_;
    while (options_.overlap && reachable < n &&
           buckets_[static_cast<std::size_t>(reachable)].pending != nullptr)
      ++reachable;
    for (int b = reachable; b < n; ++b) {
      Bucket& bucket = buckets_[static_cast<std::size_t>(b)];
      if (bucket.pending == nullptr) continue;
      cancelled.emplace_back(b, bucket.pending);
      bucket.pending = nullptr;
    }
    // The next step starts at bucket 0, after the reachable ones if any.
    if (reachable > next_) {
      restart_ = true;
    } else {
      next_ = 0;
      submitted_ = 0;
    }
  }
  for (const auto& [b, ctx] : cancelled)
    ctx->done(std::make_exception_ptr(
        Error("gradient bucket " + std::to_string(b) +
                  " was not reduced: the step failed before all of its buckets were ready",
              __FILE__, __LINE__)));
}

void GradientReducer::complete(int b) {
  std::lock_guard<std::mutex> lock(mu_);
  buckets_[static_cast<std::size_t>(b)].pending = nullptr;
  comm_busy_ = false;
  next_ = (b + 1) % static_cast<int>(buckets_.size());
  if (restart_ && (next_ == 0 || buckets_[static_cast<std::size_t>(next_)].pending == nullptr)) {
    restart_ = false;  // the failed step's last reachable bucket (abort_step)
    next_ = 0;
    submitted_ = 0;
    return;
  }
  if (next_ == 0) {  // the step's last bucket: the next step starts afresh
    reducing_here_ = false;
    submitted_ = 0;
    ++stats_.steps;
  }
}

void GradientReducer::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // buckets_ is filled by add_to_graph after this thread started: read
    // its size inside the predicate, under the lock.
    cv_.wait(lock, [&] {
      return stop_ ||
             (!buckets_.empty() && buckets_[static_cast<std::size_t>(next_)].pending != nullptr &&
              !reducing_here_);
    });
    if (stop_) return;
    const int b = next_;
    KernelContext* ctx = buckets_[static_cast<std::size_t>(b)].pending;
    comm_busy_ = true;
    lock.unlock();
    reduce_and_finish(b, ctx);
    lock.lock();
  }
}

void GradientReducer::reduce(int b) {
  Bucket& bucket = buckets_[static_cast<std::size_t>(b)];
  KernelContext& ctx = *bucket.pending;
  const std::int64_t t0 = steady_now_ns();
  Tensor grad = bucket.in_place ? ctx.input(0) : Tensor();
  std::span<float> data = bucket.in_place ? grad.flat<float>() : std::span<float>(bucket.fusion);
  if (comm_.size() > 1 && !skip_allreduce_) {
    if (options_.watch != nullptr && options_.watch->enabled())
      options_.watch->begin(StallWatch::kComm,
                            "the allreduce of gradient bucket " + std::to_string(b) + " at step " +
                                std::to_string(step_.load(std::memory_order_relaxed) + 1) +
                                " (rank " + std::to_string(comm_.rank()) +
                                " waits on its ring neighbour, rank " +
                                std::to_string((comm_.rank() + comm_.size() - 1) % comm_.size()) +
                                ", or a rank before it)");
    collectives::allreduce(comm_, data, collectives::ReduceOp::average, options_.algorithm);
    if (options_.watch != nullptr) options_.watch->end(StallWatch::kComm);
  }
  const std::int64_t t1 = steady_now_ns();
  check_finite(b, data, bucket.in_place ? &ctx : nullptr);
  if (bucket.in_place) ctx.set_output(0, grad);
  // Unpack into the persistent gradient tensors and hand them out.
  for (std::size_t k = 0; k < bucket.outputs.size() && !bucket.in_place; ++k) {
    Tensor& out = bucket.outputs[k];
    Tensor shaped = out.shape() == ctx.input(static_cast<int>(k)).shape()
                        ? out
                        : out.reshaped(ctx.input(static_cast<int>(k)).shape());
    if (out.num_elements() > 0)
      std::memcpy(shaped.data<float>(), bucket.fusion.data() + bucket.offsets[k], out.num_bytes());
    ctx.set_output(static_cast<int>(k), shaped);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.collectives += comm_.size() > 1 ? 1 : 0;
    stats_.bytes_reduced += static_cast<std::int64_t>(data.size_bytes());
    stats_.allreduce_seconds += static_cast<double>(t1 - t0) * 1e-9;
  }
  if (timeline_ && timeline_->enabled())
    timeline_->add({"allreduce bucket" + std::to_string(b), "allreduce", t0, std::max(t1, t0 + 1),
                    100, "\"bytes\":" + std::to_string(data.size_bytes())});
}

void GradientReducer::check_finite(int b, std::span<const float> data,
                                   const KernelContext* inputs) {
  const auto& members = bucket_members_[static_cast<std::size_t>(b)];
  const Bucket& bucket = buckets_[static_cast<std::size_t>(b)];
  for (std::size_t k = 0; k < members.size(); ++k) {
    std::span<const float> v;
    if (inputs != nullptr) {
      v = inputs->input(static_cast<int>(k)).flat<float>();
    } else {
      v = data.subspan(static_cast<std::size_t>(bucket.offsets[k]),
                       static_cast<std::size_t>(bucket.outputs[k].num_elements()));
    }
    if (all_finite(v)) continue;
    std::lock_guard<std::mutex> lock(mu_);
    nonfinite_[static_cast<std::size_t>(members[k])] = 1;
  }
}

std::vector<std::string> GradientReducer::take_nonfinite() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < nonfinite_.size(); ++i) {
    if (nonfinite_[i] != 0) out.push_back(var_names_[i]);
    nonfinite_[i] = 0;
  }
  return out;
}

ReducerStats GradientReducer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace ringflow::train
