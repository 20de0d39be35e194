// Parameter-server transport: the role map and point-to-point messages
// between parameter servers and workers. Knows MPI and spans of floats, nothing
// of tensors or graphs (the protocol's meaning lives in src/train/ps_*.cpp).
//
// Words: of N ranks, ranks 0..P-1 are *servers* (ps:0 .. ps:P-1) and ranks
// P..N-1 are *workers* (worker:0 .. worker:W-1, W = N - P), the job_name and
// task_index of a TensorFlow cluster derived from the MPI rank. Server p owns
// *shard* p of the parameters. A *message* is one MPI message: a fixed
// PsHeader followed by a payload (floats, or raw bytes for reports). Its tag is
// kind * kPsTagStride + shard, so every (kind, shard) pair has its own tag and
// a receive for one kind never matches another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ringflow/collectives/communicator.h"

namespace ringflow::collectives {

class PsRoles {
 public:
  // InvalidArgument naming --num-ps unless 1 <= num_ps < num_ranks.
  PsRoles(int num_ranks, int num_ps);

  int num_ranks() const { return num_ranks_; }
  int num_servers() const { return num_ps_; }
  int num_workers() const { return num_ranks_ - num_ps_; }
  bool is_server(int rank) const { return rank < num_ps_; }
  int server_rank(int shard) const { return shard; }
  int worker_rank(int worker) const { return num_ps_ + worker; }
  int worker_index(int rank) const { return rank - num_ps_; }
  // "ps:0", "worker:3"
  std::string name(int rank) const;

 private:
  int num_ranks_;
  int num_ps_;
};

enum class PsKind : int {
  pull = 1,        // worker -> server: send me your shard (header.step: my next step)
  params = 2,      // server -> worker: the shard (header.version: the server's version)
  push = 3,        // worker -> server: a gradient (header.version: the version it was computed on)
  done = 4,        // worker -> server: I will send nothing more
  report = 5,      // worker:0 -> ps:0: an epoch's metrics (raw bytes)
  checkpoint = 6,  // worker:0 -> server: checkpoint after step header.step
  snapshot = 7,    // server -> ps:0: the shard's state for checkpoint header.step
};
inline constexpr int kPsTagStride = 1024;  // at most this many shards
int ps_tag(PsKind kind, int shard);

struct PsHeader {
  std::int64_t step = 0;     // the worker's step (pull, push), the epoch (report)
  std::int64_t version = 0;  // see PsKind
  std::int64_t flags = 0;    // kPsEvalPull, kPsStop, kPsSignal
  // kPsStop, kPsSignal: the stop signal's number in `reserved`
  std::int64_t reserved = 0;
};
// A pull for evaluation: answered at once, never counted as an outstanding gradient.
inline constexpr std::int64_t kPsEvalPull = 1;
// A reply to a pull: do not run this step, stop (a stop signal reached ps:0).
inline constexpr std::int64_t kPsStop = 2;
// On a push: this worker has received a stop signal.
inline constexpr std::int64_t kPsSignal = 4;

struct PsMessage {
  int source = 0;
  PsKind kind = PsKind::pull;
  int shard = 0;
  PsHeader header;
  std::span<const std::byte> payload;  // valid until the next receive_any()
  std::span<const float> floats() const {
    return {reinterpret_cast<const float*>(payload.data()), payload.size() / sizeof(float)};
  }
};

struct PsTraffic {
  std::int64_t bytes_sent = 0;  // header and payload bytes
  std::int64_t bytes_received = 0;
  std::int64_t messages_sent = 0;
  std::int64_t messages_received = 0;
};

// Message passing over `comm` (which must outlive it). Not thread-safe: one
// thread uses it, like the Communicator.
class PsTransport {
 public:
  PsTransport(Communicator& comm, PsRoles roles);
  ~PsTransport();  // waits for posted sends
  PsTransport(const PsTransport&) = delete;
  PsTransport& operator=(const PsTransport&) = delete;

  const PsRoles& roles() const { return roles_; }
  int rank() const { return comm_.rank(); }

  // Blocking send of a header and a payload.
  void send(int dest, PsKind kind, int shard, const PsHeader& header,
            std::span<const std::byte> payload = {});

  // Non-blocking sends, one in flight per destination: send_buffer() waits
  // for the previous send to `dest`, then returns a payload area of `floats`
  // floats to fill; post() sends it.
  std::span<float> send_buffer(int dest, std::size_t floats);
  void post(int dest, PsKind kind, int shard, const PsHeader& header);
  void wait_sends();

  // Non-blocking receives, one per source: expect() posts a receive of a
  // header and `floats` floats, wait_receives() completes every posted one
  // (raising CommError if a payload has another size), and then header() and
  // payload() read them until the next expect() from that source.
  void expect(int source, PsKind kind, int shard, std::size_t floats);
  void wait_receives();
  const PsHeader& header(int source) const;
  std::span<const float> payload(int source) const;

  // The next message for this rank from anyone, of any kind (servers).
  PsMessage receive_any();

  // Training traffic: every message except reports, checkpoints and
  // snapshots, evaluation pulls (kPsEvalPull) and their replies.
  const PsTraffic& traffic() const { return traffic_; }

 private:
  struct Peer {
    std::vector<std::byte> send;  // header + payload
    std::vector<std::byte> recv;
    MPI_Request send_request = MPI_REQUEST_NULL;
    MPI_Request recv_request = MPI_REQUEST_NULL;
    std::size_t send_floats = 0;
    std::size_t recv_floats = 0;
    PsKind recv_kind = PsKind::params;
  };
  void count_sent(std::size_t bytes);
  void count_received(std::size_t bytes);

  Communicator& comm_;
  PsRoles roles_;
  std::vector<Peer> peers_;
  std::vector<int> expected_;   // sources with a posted receive
  std::vector<std::byte> any_;  // receive_any's buffer
  PsTraffic traffic_;
};

}  // namespace ringflow::collectives
