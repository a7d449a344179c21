// The service's counters in Prometheus' text exposition format (GET /metrics).
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace mrcnn::serve {

// A cumulative histogram over fixed upper bounds, as Prometheus expects.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // name_bucket{le="..."}, name_sum, name_count lines.
  std::string render(const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;  // one per bound, plus +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void count_request(int status);                 // a POST /v1/detect answered with status
  void observe_latency(double seconds) { latency_.observe(seconds); }
  void observe_batch(size_t size) { batch_size_.observe(static_cast<double>(size)); }
  void set_queue_depth(size_t depth) { queue_depth_ = depth; }
  void set_ready(bool ready) { ready_ = ready; }
  void set_info(const std::string& model, const std::string& device, int threads, int max_batch);
  std::string render() const;

 private:
  mutable std::mutex mutex_;
  std::map<int, uint64_t> requests_;  // by status code
  std::string info_;
  Histogram latency_;
  Histogram batch_size_;
  std::atomic<size_t> queue_depth_{0};
  std::atomic<bool> ready_{false};
};

}  // namespace mrcnn::serve
