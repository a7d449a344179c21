#include "batch_queue.hpp"

#include <algorithm>
#include <latch>

namespace mrcnn::serve {

BatchQueue::BatchQueue(const Detector& detector, Metrics& metrics, BatchOptions options)
    : detector_(detector), metrics_(metrics), options_(options) {
  options_.max_batch = std::max<size_t>(1, options_.max_batch);
  // Each worker warms the model up on its own thread before the queue is ready: the warm-up
  // creates that thread's OpenMP team, and no other thread runs the model (see detector.hpp).
  // A failed warm-up stops the queue and is rethrown here.
  const int workers = std::max(1, options_.workers);
  std::latch warm(workers);
  std::exception_ptr failure;
  std::mutex failure_mutex;
  for (int i = 0; i < workers; ++i)
    workers_.emplace_back([this, &warm, &failure, &failure_mutex] {
      try {
        detector_.warm_up();
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        failure = std::current_exception();
      }
      warm.count_down();
      work();
    });
  warm.wait();
  if (failure) {
    stop();
    std::rethrow_exception(failure);
  }
}

BatchQueue::~BatchQueue() { stop(); }

std::optional<std::future<ImageResult>> BatchQueue::submit(cv::Mat image, const DetectOptions& options) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_ || queue_.size() >= options_.capacity) return std::nullopt;
  Job job{std::move(image), options, {}};
  std::future<ImageResult> future = job.promise.get_future();
  queue_.emplace_back(Clock::now(), std::move(job));
  metrics_.set_queue_depth(queue_.size());
  arrived_.notify_all();
  return future;
}

void BatchQueue::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  arrived_.notify_all();
  for (std::thread& t : workers_)
    if (t.joinable()) t.join();
}

std::vector<BatchQueue::Job> BatchQueue::next_batch() {
  std::unique_lock<std::mutex> lock(mutex_);
  arrived_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
  if (queue_.empty()) return {};  // stopping with nothing left
  // The oldest job waits at most max_wait for others to fill the batch.
  const Clock::time_point deadline = queue_.front().first + options_.max_wait;
  arrived_.wait_until(lock, deadline, [&] { return stopping_ || queue_.size() >= options_.max_batch; });
  std::vector<Job> batch;
  while (!queue_.empty() && batch.size() < options_.max_batch) {
    batch.push_back(std::move(queue_.front().second));
    queue_.pop_front();
  }
  metrics_.set_queue_depth(queue_.size());
  return batch;
}

void BatchQueue::run(std::vector<Job>& batch) {
  // One call for all: masks encoded if any job wants them, the lowest threshold; each job then
  // keeps what it asked for.
  DetectOptions shared{1.f, MaskFormat::kNone};
  std::vector<cv::Mat> images;
  for (const Job& job : batch) {
    shared.score_threshold = std::min(shared.score_threshold, job.options.score_threshold);
    if (job.options.masks != MaskFormat::kNone) shared.masks = MaskFormat::kRle;
    images.push_back(job.image);
  }
  std::vector<ImageResult> results;
  try {
    results = detector_.detect(images, shared);
  } catch (const std::exception&) {
    if (batch.size() > 1) {  // find the job at fault: each on its own
      for (Job& job : batch) {
        std::vector<Job> one;
        one.push_back(std::move(job));
        run(one);
      }
      return;
    }
    batch.front().promise.set_exception(std::current_exception());
    return;
  }
  metrics_.observe_batch(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    ImageResult& r = results[i];
    const DetectOptions& wanted = batch[i].options;
    std::erase_if(r.detections, [&](const Detection& d) { return d.score < wanted.score_threshold; });
    if (wanted.masks == MaskFormat::kNone)
      for (Detection& d : r.detections) d.rle = Rle{};
    batch[i].promise.set_value(std::move(r));
  }
}

void BatchQueue::work() {
  for (;;) {
    std::vector<Job> batch = next_batch();
    if (batch.empty()) return;
    run(batch);
  }
}

}  // namespace mrcnn::serve
