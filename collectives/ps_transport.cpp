#include "ringflow/collectives/ps_transport.h"

#include <climits>
#include <cstring>

namespace ringflow::collectives {

namespace {

constexpr std::size_t kHeaderBytes = sizeof(PsHeader);

int message_bytes(std::size_t payload_bytes) {
  const std::size_t total = kHeaderBytes + payload_bytes;
  RF_CHECK(total <= static_cast<std::size_t>(INT_MAX), "parameter-server message of ", total,
           " bytes exceeds MPI's int count; use more parameter servers (--num-ps)");
  return static_cast<int>(total);
}

// Training traffic only: evaluation pulls, their replies, reports and
// checkpoints are not counted.
bool counted(PsKind kind, const PsHeader& header) {
  return kind != PsKind::report && kind != PsKind::checkpoint && kind != PsKind::snapshot &&
         (header.flags & kPsEvalPull) == 0;
}

}  // namespace

PsRoles::PsRoles(int num_ranks, int num_ps) : num_ranks_(num_ranks), num_ps_(num_ps) {
  RF_CHECK(num_ps >= 1, "--num-ps: ps mode needs at least one parameter server, got ", num_ps);
  RF_CHECK(num_ps < num_ranks, "--num-ps: ", num_ps, " parameter servers leave no worker among ",
           num_ranks, " ranks; use at most ", num_ranks - 1);
  RF_CHECK(num_ps <= kPsTagStride, "--num-ps: at most ", kPsTagStride,
           " parameter servers are supported, got ", num_ps);
}

std::string PsRoles::name(int rank) const {
  return is_server(rank) ? "ps:" + std::to_string(rank)
                         : "worker:" + std::to_string(worker_index(rank));
}

int ps_tag(PsKind kind, int shard) {
  return static_cast<int>(kind) * kPsTagStride + shard;
}

PsTransport::PsTransport(Communicator& comm, PsRoles roles)
    : comm_(comm), roles_(roles), peers_(static_cast<std::size_t>(comm.size())) {
  RF_CHECK(roles_.num_ranks() == comm.size(), "parameter-server roles for ", roles_.num_ranks(),
           " ranks on a communicator of ", comm.size());
}

PsTransport::~PsTransport() {
  for (auto& p : peers_) {
    if (p.send_request != MPI_REQUEST_NULL) MPI_Wait(&p.send_request, MPI_STATUS_IGNORE);
    if (p.recv_request != MPI_REQUEST_NULL) {
      MPI_Cancel(&p.recv_request);
      MPI_Wait(&p.recv_request, MPI_STATUS_IGNORE);
    }
  }
}

void PsTransport::count_sent(std::size_t bytes) {
  traffic_.bytes_sent += static_cast<std::int64_t>(bytes);
  ++traffic_.messages_sent;
}

void PsTransport::count_received(std::size_t bytes) {
  traffic_.bytes_received += static_cast<std::int64_t>(bytes);
  ++traffic_.messages_received;
}

void PsTransport::send(int dest, PsKind kind, int shard, const PsHeader& header,
                       std::span<const std::byte> payload) {
  const auto* h = reinterpret_cast<const std::byte*>(&header);
  std::vector<std::byte> buf(h, h + kHeaderBytes);
  buf.insert(buf.end(), payload.begin(), payload.end());
  RF_MPI_CHECK(MPI_Send(buf.data(), message_bytes(payload.size()), MPI_BYTE, dest,
                        ps_tag(kind, shard), comm_.handle()));
  if (counted(kind, header)) count_sent(buf.size());
}

std::span<float> PsTransport::send_buffer(int dest, std::size_t floats) {
  Peer& p = peers_.at(static_cast<std::size_t>(dest));
  if (p.send_request != MPI_REQUEST_NULL)
    RF_MPI_CHECK(MPI_Wait(&p.send_request, MPI_STATUS_IGNORE));
  const std::size_t bytes = kHeaderBytes + floats * sizeof(float);
  if (p.send.size() != bytes) p.send.resize(bytes);
  p.send_floats = floats;
  return {reinterpret_cast<float*>(p.send.data() + kHeaderBytes), floats};
}

void PsTransport::post(int dest, PsKind kind, int shard, const PsHeader& header) {
  Peer& p = peers_.at(static_cast<std::size_t>(dest));
  RF_CHECK_AS(InternalError,
              p.send_request == MPI_REQUEST_NULL &&
                  p.send.size() == kHeaderBytes + p.send_floats * sizeof(float),
              "PsTransport::post to rank ", dest, " without send_buffer()");
  std::memcpy(p.send.data(), &header, kHeaderBytes);
  RF_MPI_CHECK(MPI_Isend(p.send.data(), message_bytes(p.send_floats * sizeof(float)), MPI_BYTE,
                         dest, ps_tag(kind, shard), comm_.handle(), &p.send_request));
  if (counted(kind, header)) count_sent(p.send.size());
}

void PsTransport::wait_sends() {
  for (auto& p : peers_)
    if (p.send_request != MPI_REQUEST_NULL)
      RF_MPI_CHECK(MPI_Wait(&p.send_request, MPI_STATUS_IGNORE));
}

void PsTransport::expect(int source, PsKind kind, int shard, std::size_t floats) {
  Peer& p = peers_.at(static_cast<std::size_t>(source));
  RF_CHECK_AS(InternalError, p.recv_request == MPI_REQUEST_NULL,
              "PsTransport::expect: a receive from rank ", source, " is already posted");
  const std::size_t bytes = kHeaderBytes + floats * sizeof(float);
  if (p.recv.size() != bytes) p.recv.resize(bytes);
  p.recv_floats = floats;
  p.recv_kind = kind;
  RF_MPI_CHECK(MPI_Irecv(p.recv.data(), message_bytes(floats * sizeof(float)), MPI_BYTE, source,
                         ps_tag(kind, shard), comm_.handle(), &p.recv_request));
  expected_.push_back(source);
}

void PsTransport::wait_receives() {
  for (int source : expected_) {
    Peer& p = peers_[static_cast<std::size_t>(source)];
    MPI_Status status;
    RF_MPI_CHECK(MPI_Wait(&p.recv_request, &status));
    int got = 0;
    RF_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &got));
    RF_CHECK_AS(CommError, static_cast<std::size_t>(got) == p.recv.size(), "rank ", comm_.rank(),
                ": a parameter-server message from rank ", source, " has ", got,
                " bytes, expected ", p.recv.size(), " — the ranks disagree about the model");
    if (counted(p.recv_kind, header(source))) count_received(p.recv.size());
  }
  expected_.clear();
}

const PsHeader& PsTransport::header(int source) const {
  return *reinterpret_cast<const PsHeader*>(
      peers_.at(static_cast<std::size_t>(source)).recv.data());
}

std::span<const float> PsTransport::payload(int source) const {
  const Peer& p = peers_.at(static_cast<std::size_t>(source));
  return {reinterpret_cast<const float*>(p.recv.data() + kHeaderBytes), p.recv_floats};
}

PsMessage PsTransport::receive_any() {
  MPI_Status status;
  RF_MPI_CHECK(MPI_Probe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_.handle(), &status));
  int bytes = 0;
  RF_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &bytes));
  RF_CHECK_AS(CommError, bytes >= static_cast<int>(kHeaderBytes), "rank ", comm_.rank(),
              ": a parameter-server message of ", bytes, " bytes from rank ", status.MPI_SOURCE,
              " has no header");
  if (any_.size() < static_cast<std::size_t>(bytes)) any_.resize(static_cast<std::size_t>(bytes));
  RF_MPI_CHECK(MPI_Recv(any_.data(), bytes, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG,
                        comm_.handle(), MPI_STATUS_IGNORE));
  PsMessage m;
  m.source = status.MPI_SOURCE;
  m.kind = static_cast<PsKind>(status.MPI_TAG / kPsTagStride);
  m.shard = status.MPI_TAG % kPsTagStride;
  std::memcpy(&m.header, any_.data(), kHeaderBytes);
  m.payload = {any_.data() + kHeaderBytes, static_cast<std::size_t>(bytes) - kHeaderBytes};
  if (counted(m.kind, m.header)) count_received(static_cast<std::size_t>(bytes));
  return m;
}

}  // namespace ringflow::collectives
