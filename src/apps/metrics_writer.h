// --metrics FILE: one line per epoch, CSV (a .csv name) or JSON lines
// (anything else), with the columns of EpochMetrics and a mode's extra ones
// (allreduce: allreduce_seconds; ps: staleness_mean, staleness_max).
#pragma once

#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "ringflow/train/trainer.h"

namespace ringflow::apps {

class MetricsWriter {
 public:
  // An empty path writes nothing. append: a resumed run adds to the file of
  // the run it continues (the CSV header is written once). Raises IoError
  // naming the flag and the file when it cannot be written.
  MetricsWriter(const std::string& path, bool append, std::vector<std::string> extra_columns);
  // extra: one value per extra column, in order.
  void write(const train::EpochMetrics& m, const std::vector<double>& extra);

 private:
  bool csv_;
  std::vector<std::string> extra_columns_;
  std::ofstream f_;
};

}  // namespace ringflow::apps
