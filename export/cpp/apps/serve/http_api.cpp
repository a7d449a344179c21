#include "http_api.hpp"

#include <nlohmann/json.hpp>

#include <thread>

#include "image_check.hpp"
#include "result_json.hpp"

namespace mrcnn::serve {
namespace {

struct InFlight {
  explicit InFlight(std::atomic<int>& n) : n_(n) { ++n_; }
  ~InFlight() { --n_; }
  std::atomic<int>& n_;
};

// score_threshold and masks from the query; an empty string when they are valid, else why not.
std::string parse_query(const httplib::Request& req, DetectOptions& options) {
  options = {0.f, MaskFormat::kRle};
  if (req.has_param("score_threshold")) {
    std::string v = req.get_param_value("score_threshold");
    try {
      size_t used = 0;
      options.score_threshold = std::stof(v, &used);
      if (used != v.size() || !(options.score_threshold >= 0.f && options.score_threshold <= 1.f)) throw 0;
    } catch (...) {
      return "score_threshold must be a number in [0, 1], got '" + v + "'";
    }
  }
  if (req.has_param("masks")) {
    std::string v = req.get_param_value("masks");
    if (v == "rle") options.masks = MaskFormat::kRle;
    else if (v == "none") options.masks = MaskFormat::kNone;
    else return "masks must be rle or none, got '" + v + "'";
  }
  for (const auto& [key, value] : req.params)
    if (key != "score_threshold" && key != "masks") return "unknown query parameter '" + key + "'";
  return "";
}

}  // namespace

HttpApi::HttpApi(Metrics& metrics, HttpOptions options) : metrics_(metrics), options_(std::move(options)) {
  const size_t threads = options_.http_threads;
  server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_.set_payload_max_length(options_.max_body_bytes);
  // Headers and body leave in separate writes; with Nagle's algorithm the body then waits for
  // the client's delayed ACK of the headers (40 ms on Linux), which a benchmark at
  // concurrency 1 shows as a fixed cost on every answer.
  server_.set_tcp_nodelay(true);
  server_.Post("/v1/detect", [this](const httplib::Request& req, httplib::Response& res) { detect(req, res); });
  auto not_allowed = [this](const httplib::Request&, httplib::Response& res) {
    res.set_header("Allow", "POST");
    answer(res, 405, "use POST for /v1/detect");
  };
  server_.Get("/v1/detect", not_allowed);
  server_.Put("/v1/detect", not_allowed);
  server_.Delete("/v1/detect", not_allowed);
  server_.Patch("/v1/detect", not_allowed);
  auto live = [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); };
  auto ready = [this](const httplib::Request&, httplib::Response& res) {
    bool ok = queue_.load() != nullptr && !draining_;
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ready\n" : (draining_ ? "shutting down\n" : "loading\n"), "text/plain");
  };
  server_.Get("/healthz", live);
  server_.Get("/v2/health/live", live);
  server_.Get("/readyz", ready);
  server_.Get("/v2/health/ready", ready);
  server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(), "text/plain; version=0.0.4");
  });
  // httplib's own errors (404 for a path, 413 for a body over the limit) get a JSON body too.
  httplib::Server::HandlerWithResponse on_error = [](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = res.status == 404 ? "no such path: " + req.path
                        : res.status == 413 ? "request body over the limit"
                                            : "HTTP status " + std::to_string(res.status);
    res.set_content(nlohmann::json{{"error", message}}.dump() + "\n", "application/json");
    return httplib::Server::HandlerResponse::Handled;
  };
  server_.set_error_handler(on_error);
}

void HttpApi::answer(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(nlohmann::json{{"error", message}}.dump() + "\n", "application/json");
}

void HttpApi::detect(const httplib::Request& req, httplib::Response& res) {
  InFlight guard(in_flight_);
  const auto start = std::chrono::steady_clock::now();
  auto finish = [&](int status) {
    metrics_.count_request(status);
    metrics_.observe_latency(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  };
  BatchQueue* queue = queue_.load();
  if (draining_ || queue == nullptr) {
    res.set_header("Retry-After", "1");
    if (draining_) res.set_header("Connection", "close");
    answer(res, 503, draining_ ? "shutting down" : "the model is loading");
    return finish(503);
  }
  std::string type = req.get_header_value("Content-Type");
  if (type.rfind("image/", 0) != 0) {
    answer(res, 415, "Content-Type must be image/* (JPEG or PNG), got '" + type + "'");
    return finish(415);
  }
  DetectOptions options;
  if (std::string bad = parse_query(req, options); !bad.empty()) {
    answer(res, 400, bad);
    return finish(400);
  }
  ImageCheck check = decode_image(req.body, options_.max_pixels);
  if (check.status != 200) {
    answer(res, check.status, check.message);
    return finish(check.status);
  }
  auto future = queue->submit(std::move(check.image), options);
  if (!future) {
    res.set_header("Retry-After", "1");
    answer(res, 503, "the queue is full");
    return finish(503);
  }
  try {
    ImageResult result = future->get();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    res.set_content(mrcnn::apps::image_json(result, ms).dump() + "\n", "application/json");
    return finish(200);
  } catch (const Error& e) {
    int status = e.kind() == Error::Kind::kInput ? 400 : 500;
    answer(res, status, e.what());
    return finish(status);
  } catch (const std::exception& e) {
    answer(res, 500, e.what());
    return finish(500);
  }
}

int HttpApi::bind() {
  if (options_.port == 0) return server_.bind_to_any_port(options_.host);
  return server_.bind_to_port(options_.host, options_.port) ? options_.port : -1;
}

void HttpApi::listen() { server_.listen_after_bind(); }

void HttpApi::set_ready(BatchQueue* queue) {
  queue_ = queue;
  metrics_.set_ready(queue != nullptr);
}

void HttpApi::drain_and_stop(std::chrono::milliseconds linger, std::chrono::seconds timeout) {
  draining_ = true;
  metrics_.set_ready(false);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (in_flight_.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(linger);
  server_.stop();
}

}  // namespace mrcnn::serve
