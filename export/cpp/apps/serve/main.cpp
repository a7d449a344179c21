// mrcnn_serve: a reference HTTP service on the mrcnn::Detector library.
//
//   mrcnn_serve --model model.ts [--host 127.0.0.1] [--port 8080] [--device cpu|cuda] [--threads N]
//               [--workers N] [--max-batch N] [--max-wait-ms MS] [--queue N] [--max-body-mb MB]
//               [--max-pixels N]
//
// Listens at once (GET /healthz answers), loads and warms the model up, then answers /readyz
// and POST /v1/detect (see http_api.hpp). SIGTERM or SIGINT: stop taking requests, answer
// those accepted, exit 0. Exit status 2: bad arguments, a model that does not load, or a
// port that cannot be bound.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <pthread.h>
#include <string>
#include <thread>

#include "batch_queue.hpp"
#include "http_api.hpp"
#include "metrics.hpp"
#include "mrcnn/detector.hpp"

namespace {

struct Options {
  std::string model;
  std::string device = "cpu";
  int threads = 0;
  std::string plan = "auto";  // DetectorOptions::plan
  mrcnn::serve::BatchOptions batch;
  mrcnn::serve::HttpOptions http;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void usage() {
  std::cerr << "usage: mrcnn_serve --model model.ts [--host H] [--port P] [--device cpu|cuda] [--threads N]\n"
               "                   [--plan auto|exported|off|FILE]\n"
               "                   [--workers N] [--max-batch N] [--max-wait-ms MS] [--queue N]\n"
               "                   [--max-body-mb MB] [--max-pixels N]\n";
}

long long parse_number(const std::string& name, const std::string& v, long long minimum) {
  try {
    size_t used = 0;
    long long n = std::stoll(v, &used);
    if (used == v.size() && n >= minimum) return n;
  } catch (...) {
  }
  throw UsageError("error: " + name + " needs an integer >= " + std::to_string(minimum) + ", got " + v);
}

Options parse_args(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError("error: " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--model") opt.model = next();
    else if (a == "--device") opt.device = next();
    else if (a == "--host") opt.http.host = next();
    else if (a == "--port") opt.http.port = static_cast<int>(parse_number(a, next(), 0));
    else if (a == "--threads") opt.threads = static_cast<int>(parse_number(a, next(), 0));
    else if (a == "--plan") opt.plan = next();
    else if (a == "--workers") opt.batch.workers = static_cast<int>(parse_number(a, next(), 1));
    else if (a == "--max-batch") opt.batch.max_batch = parse_number(a, next(), 1);
    else if (a == "--max-wait-ms") opt.batch.max_wait = std::chrono::milliseconds(parse_number(a, next(), 0));
    else if (a == "--queue") opt.batch.capacity = parse_number(a, next(), 1);
    else if (a == "--max-body-mb") opt.http.max_body_bytes = static_cast<size_t>(parse_number(a, next(), 1)) << 20;
    else if (a == "--max-pixels") opt.http.max_pixels = parse_number(a, next(), 1);
    else if (a == "-h" || a == "--help") { usage(); std::exit(0); }
    else throw UsageError("error: unknown argument " + a);
  }
  if (opt.model.empty()) throw UsageError("error: --model is required");
  if (opt.http.port > 65535) throw UsageError("error: --port must be at most 65535");
  // Every request waiting in the queue or in a batch holds an HTTP thread; a few more answer
  // health checks and metrics meanwhile.
  opt.http.http_threads = opt.batch.capacity + opt.batch.max_batch * opt.batch.workers + 8;
  return opt;
}

int run(const Options& opt) {
  // SIGTERM/SIGINT go to one thread that waits for them; every other thread blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  mrcnn::serve::Metrics metrics;
  mrcnn::serve::HttpApi api(metrics, opt.http);
  int port = api.bind();
  if (port < 0) {
    std::cerr << "error: cannot listen on " << opt.http.host << ":" << opt.http.port << "\n";
    return 2;
  }
  std::printf("mrcnn_serve: listening on http://%s:%d (loading %s)\n", opt.http.host.c_str(), port, opt.model.c_str());
  std::fflush(stdout);
  std::thread server([&] { api.listen(); });
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::printf("mrcnn_serve: signal %d, finishing the requests in flight\n", sig);
    std::fflush(stdout);
    api.drain_and_stop(std::chrono::milliseconds(500), std::chrono::seconds(60));
  });

  std::optional<mrcnn::Detector> detector;
  std::optional<mrcnn::serve::BatchQueue> queue;
  try {
    mrcnn::DetectorOptions options;
    options.device = opt.device;
    options.intra_op_threads = opt.threads;
    options.plan = opt.plan;
    options.warmup = false;  // the queue's workers warm it up, each on its own thread
    detector.emplace(opt.model, options);
    metrics.set_info(opt.model, opt.device, mrcnn::intra_op_threads(), static_cast<int>(opt.batch.max_batch));
    std::printf("mrcnn_serve: plan: %s\n", detector->info().plan_note.c_str());
    queue.emplace(*detector, metrics, opt.batch);
  } catch (const mrcnn::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    pthread_kill(stopper.native_handle(), SIGTERM);
    stopper.join();
    server.join();
    return 2;
  }
  api.set_ready(&*queue);
  std::printf("mrcnn_serve: ready (%s on %s, %d threads, max batch %zu, wait %lld ms, queue %zu, workers %d)\n",
              opt.model.c_str(), opt.device.c_str(), mrcnn::intra_op_threads(), opt.batch.max_batch,
              static_cast<long long>(opt.batch.max_wait.count()), opt.batch.capacity, opt.batch.workers);
  std::fflush(stdout);
  server.join();
  stopper.join();
  queue->stop();
  api.set_ready(nullptr);
  std::printf("mrcnn_serve: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    std::cerr << e.what() << "\n";
    usage();
    return 2;
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::cerr << "error: " << what.substr(0, what.find('\n')) << "\n";
    return 1;
  }
}
