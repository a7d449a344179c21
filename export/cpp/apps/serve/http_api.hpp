// mrcnn_serve's HTTP layer: routes, request parsing, status codes, draining on shutdown.
//
//   POST /v1/detect?score_threshold=T&masks=rle|none   body: a JPEG or PNG (Content-Type image/*)
//   GET  /healthz, /v2/health/live       200 while the process serves
//   GET  /readyz, /v2/health/ready       200 once the model is loaded and warmed up, else 503
//   GET  /metrics                        Prometheus text
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "batch_queue.hpp"
#include "metrics.hpp"

namespace mrcnn::serve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                         // 0: any free port (printed at start)
  size_t max_body_bytes = 32u << 20;       // larger bodies are answered 413
  int64_t max_pixels = 40'000'000;         // larger images (by their header) are answered 413
  size_t http_threads = 16;                // connections served at once
};

class HttpApi {
 public:
  HttpApi(Metrics& metrics, HttpOptions options);
  // Binds the socket; returns the port, or -1 when it cannot be bound.
  int bind();
  // Serves until drain_and_stop(); blocks.
  void listen();
  // From now on detect requests run on queue (which must outlive this object's serving).
  void set_ready(BatchQueue* queue);
  // New detect requests get 503 from now on; waits (up to timeout) for those in flight to be
  // answered, keeps answering 503 for linger so that clients see it, then closes the socket.
  void drain_and_stop(std::chrono::milliseconds linger, std::chrono::seconds timeout);

 private:
  void detect(const httplib::Request& req, httplib::Response& res);
  void answer(httplib::Response& res, int status, const std::string& message);

  Metrics& metrics_;
  HttpOptions options_;
  httplib::Server server_;
  std::atomic<BatchQueue*> queue_{nullptr};
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};
};

}  // namespace mrcnn::serve
