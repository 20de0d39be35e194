// Small vocabulary types of the collectives library: the reduce op and the
// allreduce algorithm, with their command-line spellings.
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

// "sum" | "average"; throws InvalidArgument naming the accepted spellings.
ReduceOp parse_reduce_op(std::string_view text);
std::string_view to_string(ReduceOp op);

// "ring" | "mpi" | "auto"; throws InvalidArgument naming the accepted spellings.
Algorithm parse_algorithm(std::string_view text);
std::string_view to_string(Algorithm algorithm);

}  // namespace ringflow::collectives
