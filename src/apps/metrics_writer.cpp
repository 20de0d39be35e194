#include "metrics_writer.h"

#include "ringflow/base/error.h"

namespace ringflow::apps {

MetricsWriter::MetricsWriter(const std::string& path, bool append,
                             std::vector<std::string> extra_columns)
    : csv_(path.size() >= 4 && path.substr(path.size() - 4) == ".csv"),
      extra_columns_(std::move(extra_columns)) {
  if (path.empty()) return;
  std::ifstream existing(path);
  const bool has_lines = append && existing.good() && existing.peek() != EOF;
  f_.open(path, append ? std::ios::app : std::ios::trunc);
  RF_CHECK_AS(IoError, f_.good(), "--metrics: cannot write '", path,
              "'; check the directory exists and is writable");
  if (csv_ && !has_lines) {
    f_ << "epoch,steps,train_loss,test_loss,test_accuracy,samples_per_second,elapsed_seconds";
    for (const auto& c : extra_columns_) f_ << ',' << c;
    f_ << '\n';
  }
}

void MetricsWriter::write(const train::EpochMetrics& m, const std::vector<double>& extra) {
  if (!f_.is_open()) return;
  if (csv_) {
    f_ << m.epoch << ',' << m.steps << ',' << m.train_loss << ',' << m.test_loss << ','
       << m.test_accuracy << ',' << m.samples_per_second << ',' << m.elapsed_seconds;
    for (const double v : extra) f_ << ',' << v;
    f_ << '\n';
  } else {
    f_ << "{\"epoch\":" << m.epoch << ",\"steps\":" << m.steps << ",\"train_loss\":" << m.train_loss
       << ",\"test_loss\":" << m.test_loss << ",\"test_accuracy\":" << m.test_accuracy
       << ",\"samples_per_second\":" << m.samples_per_second
       << ",\"elapsed_seconds\":" << m.elapsed_seconds;
    for (std::size_t i = 0; i < extra.size() && i < extra_columns_.size(); ++i)
      f_ << ",\"" << extra_columns_[i] << "\":" << extra[i];
    f_ << "}\n";
  }
  f_.flush();
}

}  // namespace ringflow::apps
