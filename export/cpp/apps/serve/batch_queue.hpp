// Dynamic batching: requests that arrive together run as one forward call.
//
// A bounded FIFO of jobs. Each worker thread takes the oldest job, waits up to max_wait for
// more (at most max_batch in all), runs them with one Detector::detect call, and fulfils each
// job's future. submit() refuses a job when the queue is full, so that overload is answered
// (503) instead of piling up.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "metrics.hpp"
#include "mrcnn/detector.hpp"

namespace mrcnn::serve {

struct BatchOptions {
  size_t capacity = 32;                      // jobs waiting, beyond those being run
  size_t max_batch = 4;
  std::chrono::milliseconds max_wait{5};     // how long the oldest job waits for company
  int workers = 1;                           // batches run at once on the one Detector
};

class BatchQueue {
 public:
  BatchQueue(const Detector& detector, Metrics& metrics, BatchOptions options);
  ~BatchQueue();
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // The job's future, or nothing when the queue is full. The future throws mrcnn::Error when
  // the detection failed.
  std::optional<std::future<ImageResult>> submit(cv::Mat image, const DetectOptions& options);
  // Runs what is queued, then joins the workers. submit() refuses everything afterwards.
  void stop();

 private:
  struct Job {
    cv::Mat image;
    DetectOptions options;
    std::promise<ImageResult> promise;
  };
  using Clock = std::chrono::steady_clock;

  std::vector<Job> next_batch();
  void run(std::vector<Job>& batch);
  void work();

  const Detector& detector_;
  Metrics& metrics_;
  BatchOptions options_;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<std::pair<Clock::time_point, Job>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace mrcnn::serve
