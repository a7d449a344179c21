#include "metrics.hpp"

#include <sstream>

namespace mrcnn::serve {
namespace {

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') { out += "\\n"; continue; }
    out += c;
  }
  return out;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream os;
  os << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    os << name << "_bucket{le=\"" << bounds_[i] << "\"} " << cumulative << "\n";
  }
  os << name << "_bucket{le=\"+Inf\"} " << count_ << "\n" << name << "_sum " << sum_ << "\n"
     << name << "_count " << count_ << "\n";
  return os.str();
}

Metrics::Metrics()
    : latency_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      batch_size_({1, 2, 4, 8, 16, 32, 64}) {}

void Metrics::count_request(int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[status];
}

void Metrics::set_info(const std::string& model, const std::string& device, int threads, int max_batch) {
  std::lock_guard<std::mutex> lock(mutex_);
  info_ = "mrcnn_model_info{model=\"" + escape_label(model) + "\",device=\"" + escape_label(device) +
          "\",intra_op_threads=\"" + std::to_string(threads) + "\",max_batch=\"" + std::to_string(max_batch) + "\"} 1\n";
}

std::string Metrics::render() const {
  std::ostringstream os;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    os << "# HELP mrcnn_requests_total POST /v1/detect requests answered, by HTTP status.\n"
          "# TYPE mrcnn_requests_total counter\n";
    for (const auto& [code, n] : requests_) os << "mrcnn_requests_total{code=\"" << code << "\"} " << n << "\n";
    os << "# HELP mrcnn_model_info The loaded model.\n# TYPE mrcnn_model_info gauge\n" << info_;
  }
  os << latency_.render("mrcnn_request_latency_seconds", "Time from a detect request's arrival to its answer.")
     << batch_size_.render("mrcnn_batch_size", "Images per forward call.")
     << "# HELP mrcnn_queue_depth Requests waiting for a batch.\n# TYPE mrcnn_queue_depth gauge\n"
     << "mrcnn_queue_depth " << queue_depth_.load() << "\n"
     << "# HELP mrcnn_ready 1 once the model is loaded and warmed up.\n# TYPE mrcnn_ready gauge\n"
     << "mrcnn_ready " << (ready_.load() ? 1 : 0) << "\n";
  return os.str();
}

}  // namespace mrcnn::serve
