// mrcnn_infer: detections from an exported mrcnn_plugin model, on the mrcnn::Detector library.
//
//   mrcnn_infer --model model.ts [--device cpu|cuda] [--threads N] [--plan auto|exported|off|FILE] [--batch N] [--json out.json]
//               [--vis out.png | --vis DIR] [--vis-threshold T] IMAGE...
//
// Reads the images, calls the detector (--batch images per forward call), prints and writes the
// results. Exit status: 0 ok, 2 bad arguments or model, 3 unreadable image, 4 device
// unavailable, 5 inference failure.
#include <opencv2/imgcodecs.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "draw.hpp"
#include "mrcnn/detector.hpp"
#include "result_json.hpp"

namespace fs = std::filesystem;

namespace {

struct Options {
  std::string model;
  std::string device = "cpu";
  int threads = 0;
  std::string plan = "auto";  // DetectorOptions::plan
  int batch = 1;
  std::string json_path;
  std::string vis_path;
  float vis_threshold = 0.5f;  // pictures show detections scoring at least this; JSON keeps all
  std::vector<std::string> images;
};

class ExitError : public std::runtime_error {
 public:
  ExitError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

void usage() {
  std::cerr << "usage: mrcnn_infer --model model.ts [--device cpu|cuda] [--threads N] [--plan auto|exported|off|FILE]\n"
               "                   [--batch N] [--json out.json] [--vis out.png|DIR] [--vis-threshold T] IMAGE...\n";
}

int parse_int(const std::string& name, const std::string& v, int minimum) {
  try {
    size_t used = 0;
    int n = std::stoi(v, &used);
    if (used == v.size() && n >= minimum) return n;
  } catch (...) {
  }
  throw ExitError(2, "error: " + name + " needs an integer >= " + std::to_string(minimum) + ", got " + v);
}

Options parse_args(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](const char* name) -> std::string {
      if (i + 1 >= argc) throw ExitError(2, std::string("error: ") + name + " needs a value");
      return argv[++i];
    };
    if (a == "--model") opt.model = next("--model");
    else if (a == "--device") opt.device = next("--device");
    else if (a == "--threads") opt.threads = parse_int("--threads", next("--threads"), 0);
    else if (a == "--plan") opt.plan = next("--plan");
    else if (a == "--batch") opt.batch = parse_int("--batch", next("--batch"), 1);
    else if (a == "--json") opt.json_path = next("--json");
    else if (a == "--vis") opt.vis_path = next("--vis");
    else if (a == "--vis-threshold") {
      std::string v = next("--vis-threshold");
      try { opt.vis_threshold = std::stof(v); } catch (...) { throw ExitError(2, "error: --vis-threshold needs a number, got " + v); }
    }
    else if (a == "-h" || a == "--help") { usage(); std::exit(0); }
    else if (a.rfind("--", 0) == 0) throw ExitError(2, "error: unknown option " + a);
    else opt.images.push_back(a);
  }
  if (opt.model.empty()) throw ExitError(2, "error: --model is required");
  if (opt.images.empty()) throw ExitError(2, "error: no input image given");
  if (opt.device != "cpu" && opt.device != "cuda") throw ExitError(2, "error: --device must be cpu or cuda, got " + opt.device);
  return opt;
}

cv::Mat read_image(const std::string& path) {
  if (!fs::exists(path)) throw ExitError(3, "error: image not found: " + path);
  cv::Mat bgr;
  try {
    bgr = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception&) {
    bgr.release();
  }
  if (bgr.empty()) throw ExitError(3, "error: cannot read image (missing, corrupt or not an image): " + path);
  return bgr;
}

std::string vis_path_for(const Options& opt, const std::string& image) {
  fs::path vis(opt.vis_path);
  if (opt.images.size() == 1 && vis.has_extension()) return vis.string();
  fs::create_directories(vis);
  return (vis / (fs::path(image).stem().string() + ".png")).string();
}

void print_result(const std::string& path, const mrcnn::ImageResult& r, double ms) {
  std::printf("%s: %dx%d, %zu detections, %.1f ms\n", path.c_str(), r.width, r.height, r.detections.size(), ms);
  for (const mrcnn::Detection& d : r.detections) {
    std::printf("  %-16s %.3f  box [%.1f, %.1f, %.1f, %.1f]", d.class_name.c_str(), d.score, d.box[0], d.box[1],
                d.box[2], d.box[3]);
    if (d.mask_area >= 0) std::printf("  mask area %lld", static_cast<long long>(d.mask_area));
    std::printf("\n");
  }
}

int run(int argc, char** argv) {
  Options opt = parse_args(argc, argv);
  // The pictures need the masks themselves; the JSON's RLE is encoded from them.
  const mrcnn::DetectOptions detect_options{0.f, opt.vis_path.empty() ? mrcnn::MaskFormat::kRle : mrcnn::MaskFormat::kMat};
  mrcnn::DetectorOptions detector_options;
  detector_options.device = opt.device;
  detector_options.intra_op_threads = opt.threads;
  detector_options.plan = opt.plan;
  detector_options.warmup = false;  // a command-line run reports each image's own time, first one included
  mrcnn::Detector detector(opt.model, detector_options);
  const mrcnn::ModelInfo& info = detector.info();
  std::cout << "model: " << opt.model << " (" << info.classes.size() << " classes, input " << info.input_format
            << ") on " << opt.device << ", " << mrcnn::intra_op_threads() << " threads\n";
  if (!info.plan_note.empty()) std::cout << "plan: " << info.plan_note << "\n";

  nlohmann::ordered_json images = nlohmann::ordered_json::array();
  for (size_t first = 0; first < opt.images.size(); first += opt.batch) {
    const size_t last = std::min(opt.images.size(), first + static_cast<size_t>(opt.batch));
    std::vector<cv::Mat> batch;
    for (size_t n = first; n < last; ++n) batch.push_back(read_image(opt.images[n]));
    auto start = std::chrono::steady_clock::now();
    std::vector<mrcnn::ImageResult> results;
    try {
      results = detector.detect(batch, detect_options);
    } catch (const mrcnn::Error& e) {
      throw ExitError(5, "error: " + std::string(e.what()) + " (on " + opt.images[first] +
                             (last - first > 1 ? " and the rest of its batch)" : ")"));
    }
    // latency_ms: the forward call that held the image (the whole batch's time with --batch).
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    for (size_t n = first; n < last; ++n) {
      const mrcnn::ImageResult& r = results[n - first];
      print_result(opt.images[n], r, ms);
      if (!opt.vis_path.empty()) {
        cv::Mat canvas = batch[n - first].clone();
        mrcnn::apps::draw_detections(canvas, r, info, opt.vis_threshold);
        std::string out = vis_path_for(opt, opt.images[n]);
        if (!cv::imwrite(out, canvas)) throw ExitError(5, "error: cannot write " + out);
      }
      nlohmann::ordered_json image = {{"file", opt.images[n]}};
      image.update(mrcnn::apps::image_json(r, ms));
      images.push_back(std::move(image));
    }
  }
  if (!opt.json_path.empty()) {
    std::ofstream f(opt.json_path);
    nlohmann::ordered_json root = {{"model", opt.model}, {"device", opt.device}, {"images", std::move(images)}};
    f << root.dump(2) << "\n";
    if (!f) throw ExitError(5, "error: cannot write " + opt.json_path);
  }
  return 0;
}

int exit_code(mrcnn::Error::Kind kind) {
  switch (kind) {
    case mrcnn::Error::Kind::kModel: return 2;
    case mrcnn::Error::Kind::kInput: return 3;
    case mrcnn::Error::Kind::kDevice: return 4;
    default: return 5;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const ExitError& e) {
    std::cerr << e.what() << "\n";
    if (e.code() == 2 && std::string(e.what()).find("--") != std::string::npos) usage();
    return e.code();
  } catch (const mrcnn::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return exit_code(e.kind());
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::cerr << "error: " << what.substr(0, what.find('\n')) << "\n";
    return 5;
  }
}
