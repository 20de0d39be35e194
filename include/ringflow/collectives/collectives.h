// Umbrella header of ringflow::collectives: MPI and spans of floats, nothing of
// tensors or graphs.
#pragma once

#include "ringflow/collectives/allreduce.h"
#include "ringflow/collectives/broadcast.h"
#include "ringflow/collectives/communicator.h"
#include "ringflow/collectives/environment.h"
#include "ringflow/collectives/ps_transport.h"
#include "ringflow/collectives/types.h"
