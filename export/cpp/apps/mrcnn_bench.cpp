// mrcnn_bench: a plain loop over the library, the baseline of the service benchmark
// (scripts/bench_serve.py). Each call decodes one image file's bytes (held in memory) and
// runs Detector::detect with masks as cv::Mat: what a program that links the library does,
// without HTTP, JSON or RLE.
//
//   mrcnn_bench --model model.ts [--device cpu] [--threads N] [--plan P] [--calls N] [--warmup N] IMAGE...
//   mrcnn_bench --model model.ts ... --stdin IMAGE...
//
// Prints one JSON object: {"calls", "wall_s", "latencies_s": [...], "detections": [...]}.
// With --stdin it warms up, prints "ready", then for each line K read from stdin runs image K
// and prints {"seconds", "detections"}: a benchmark can interleave its calls with others.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "mrcnn/detector.hpp"

namespace {

struct Options {
  std::string model;
  std::string device = "cpu";
  int threads = 0;
  std::string plan = "auto";  // DetectorOptions::plan
  int calls = 10;
  int warmup = 2;
  bool from_stdin = false;
  std::vector<std::string> images;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "mrcnn_bench: " << message << "\n"
            << "usage: mrcnn_bench --model model.ts [--device cpu] [--threads N] [--plan auto|exported|off|FILE] "
               "[--calls N | --stdin] [--warmup N] "
               "IMAGE...\n";
  std::exit(2);
}

int parse_count(const std::string& flag, const std::string& value, int minimum) {
  char* end = nullptr;
  long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || v < minimum) usage_error(flag + " needs an integer >= " + std::to_string(minimum));
  return static_cast<int>(v);
}

Options parse(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--model") opt.model = next();
    else if (a == "--device") opt.device = next();
    else if (a == "--threads") opt.threads = parse_count(a, next(), 0);
    else if (a == "--plan") opt.plan = next();
    else if (a == "--calls") opt.calls = parse_count(a, next(), 1);
    else if (a == "--warmup") opt.warmup = parse_count(a, next(), 0);
    else if (a == "--stdin") opt.from_stdin = true;
    else if (a.rfind("--", 0) == 0) usage_error("unknown option " + a);
    else opt.images.push_back(a);
  }
  if (opt.model.empty()) usage_error("--model is required");
  if (opt.images.empty()) usage_error("give at least one image");
  return opt;
}

std::vector<uchar> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse(argc, argv);
  try {
    std::vector<std::vector<uchar>> files;
    for (const auto& path : opt.images) files.push_back(read_bytes(path));
    mrcnn::DetectorOptions load;
    load.device = opt.device;
    load.intra_op_threads = opt.threads;
    load.plan = opt.plan;
    mrcnn::Detector detector(opt.model, load);
    std::cerr << "mrcnn_bench: plan: " << detector.info().plan_note << "\n";
    mrcnn::DetectOptions detect;
    detect.masks = mrcnn::MaskFormat::kMat;
    auto call = [&](int i) {
      cv::Mat image = cv::imdecode(files[i % files.size()], cv::IMREAD_COLOR);
      if (image.empty()) throw std::runtime_error("cannot decode " + opt.images[i % files.size()]);
      return detector.detect(image, detect).detections.size();
    };
    for (int i = 0; i < opt.warmup; ++i) call(i);
    if (opt.from_stdin) {
      std::cout << "ready" << std::endl;
      for (std::string line; std::getline(std::cin, line);) {
        int k = parse_count("an image index", line, 0);
        if (k >= static_cast<int>(files.size())) usage_error("image index " + line + " is out of range");
        auto t0 = std::chrono::steady_clock::now();
        size_t found = call(k);
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::cout << nlohmann::json{{"seconds", seconds}, {"detections", found}} << std::endl;
      }
      return 0;
    }
    nlohmann::json latencies = nlohmann::json::array(), detections = nlohmann::json::array();
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < opt.calls; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      detections.push_back(call(i));
      latencies.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << nlohmann::json{{"calls", opt.calls}, {"wall_s", wall}, {"latencies_s", latencies},
                                {"detections", detections}, {"intra_op_threads", mrcnn::intra_op_threads()}}
              << "\n";
  } catch (const std::exception& e) {
    std::cerr << "mrcnn_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
