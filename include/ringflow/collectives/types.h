// Small vocabulary types of the collectives library: the reduce op, the allreduce
// algorithm and the ring's transport, with their command-line spellings.
#pragma once

#include <string_view>

namespace ringflow::collectives {

// sum: every rank ends with the elementwise sum over ranks.
// average: the sum divided by the rank count (the gradient average); computed by
// post-scaling the reduced values, so it costs no extra pass over the buffer.
enum class ReduceOp { sum, average };

// ring: ringflow's segmented, pipelined ring (bandwidth-optimal for large buffers).
// mpi: MPI_Allreduce in place (the fallback; often better for tiny, latency-bound buffers).
// automatic: picks one of the two per call from the buffer size (see AllreduceCrossovers).
enum class Algorithm { ring, mpi, automatic };

// How the ring moves segments between neighbours (same chunks, same sums, bitwise the
// same result either way):
// p2p: MPI point-to-point messages; works on any communicator, also across nodes.
// shm: an MPI-3 shared-memory window (MPI_Win_allocate_shared): each rank reduces
//      straight out of its left neighbour's slots; needs every rank on one node.
// automatic: shm when every rank of the communicator shares this node's memory,
//      p2p otherwise (see choose_ring_transport).
enum class RingTransport { automatic, shm, p2p };

// "sum" | "average"; throws InvalidArgument naming the accepted spellings.
ReduceOp parse_reduce_op(std::string_view text);
std::string_view to_string(ReduceOp op);

// "ring" | "mpi" | "auto"; throws InvalidArgument naming the accepted spellings.
Algorithm parse_algorithm(std::string_view text);
std::string_view to_string(Algorithm algorithm);

// "auto" | "shm" | "p2p"; throws InvalidArgument naming the accepted spellings.
RingTransport parse_ring_transport(std::string_view text);
std::string_view to_string(RingTransport transport);

}  // namespace ringflow::collectives
