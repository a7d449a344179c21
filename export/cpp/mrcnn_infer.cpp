// mrcnn_infer: detections from an exported mrcnn_plugin model, with LibTorch and OpenCV only.
//
//   mrcnn_infer --model model.ts [--device cpu|cuda] [--threads N] [--json out.json]
//               [--vis out.png | --vis DIR] [--vis-threshold T] IMAGE...
//
// The model (written by `mrcnn export`) takes original-size uint8 images and does all
// preprocessing and postprocessing itself; this program only reads images, calls it,
// prints and writes the results. Exit status: 0 ok, 2 bad arguments or model,
// 3 unreadable image, 4 device unavailable, 5 inference failure.
#include <torch/script.h>
#include <torch/cuda.h>
#include <ATen/Parallel.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "json.hpp"

namespace fs = std::filesystem;

namespace {

struct Options {
  std::string model;
  std::string device = "cpu";
  int threads = 0;
  std::string json_path;
  std::string vis_path;
  float vis_threshold = 0.5f;  // pictures show detections scoring at least this; JSON keeps all
  std::vector<std::string> images;
};

struct Metadata {
  std::string format = "BGR";
  std::vector<std::string> classes;
  std::vector<std::pair<int, int>> skeleton;  // keypoint index pairs
  std::vector<std::string> keypoint_names;
};

struct Detection {
  int cls = 0;
  float score = 0;
  float box[4] = {0, 0, 0, 0};
  int64_t mask_area = -1;
  std::vector<int64_t> mask_rle;  // column-major run lengths, starting with background
  std::vector<float> keypoints;   // K * 3 (x, y, score)
};

class ExitError : public std::runtime_error {
 public:
  ExitError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

void usage() {
  std::cerr << "usage: mrcnn_infer --model model.ts [--device cpu|cuda] [--threads N] [--json out.json]\n"
               "                   [--vis out.png|DIR] [--vis-threshold T] IMAGE...\n";
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
    else if (a == "--threads") {
      std::string v = next("--threads");
      try { opt.threads = std::stoi(v); } catch (...) { throw ExitError(2, "error: --threads needs an integer, got " + v); }
    }
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

Metadata parse_metadata(const std::string& text) {
  Metadata meta;
  if (text.empty()) return meta;
  minijson::Value root = minijson::parse(text);
  const auto& input = root["input"];
  if (!input["format"].is_null()) meta.format = input["format"].string;
  for (const auto& c : root["classes"].array) meta.classes.push_back(c.string);
  for (const auto& k : root["keypoint_names"].array) meta.keypoint_names.push_back(k.string);
  std::unordered_map<std::string, int> index;
  for (size_t i = 0; i < meta.keypoint_names.size(); ++i) index[meta.keypoint_names[i]] = static_cast<int>(i);
  for (const auto& pair : root["keypoint_skeleton"].array) {
    if (pair.array.size() < 2) continue;
    auto a = index.find(pair.array[0].string), b = index.find(pair.array[1].string);
    if (a != index.end() && b != index.end()) meta.skeleton.emplace_back(a->second, b->second);
  }
  return meta;
}

torch::jit::Module load_model(const Options& opt, Metadata& meta, const torch::Device& device) {
  if (!fs::exists(opt.model)) throw ExitError(2, "error: model file not found: " + opt.model);
  if (!fs::is_regular_file(opt.model)) throw ExitError(2, "error: model path is not a file: " + opt.model);
  torch::jit::ExtraFilesMap extra{{"model.json", ""}};
  torch::jit::Module module;
  try {
    module = torch::jit::load(opt.model, torch::kCPU, extra);
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw ExitError(2, "error: " + opt.model + " is not a TorchScript model written by `mrcnn export` (" +
                           what.substr(0, what.find('\n')) + ")");
  }
  try {
    meta = parse_metadata(extra["model.json"]);
  } catch (const std::exception& e) {
    throw ExitError(2, std::string("error: bad metadata in ") + opt.model + ": " + e.what());
  }
  module.eval();
  module.to(device);
  return module;
}

torch::Tensor read_image(const std::string& path, const Metadata& meta) {
  if (!fs::exists(path)) throw ExitError(3, "error: image not found: " + path);
  cv::Mat bgr;
  try {
    bgr = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception&) {
    bgr.release();
  }
  if (bgr.empty()) throw ExitError(3, "error: cannot read image (missing, corrupt or not an image): " + path);
  cv::Mat img;
  if (meta.format == "RGB") cv::cvtColor(bgr, img, cv::COLOR_BGR2RGB);
  else img = bgr;
  torch::Tensor hwc = torch::from_blob(img.data, {img.rows, img.cols, 3}, torch::kUInt8);
  return hwc.permute({2, 0, 1}).contiguous();  // copies: the Mat's memory is not kept
}

std::vector<int64_t> column_major_rle(const torch::Tensor& mask) {
  // COCO's uncompressed RLE: runs over the column-major (Fortran) pixel order, first run of zeros.
  torch::Tensor flat = mask.t().contiguous().view({-1});
  const uint8_t* p = flat.data_ptr<uint8_t>();
  int64_t n = flat.numel();
  std::vector<int64_t> counts;
  uint8_t current = 0;
  int64_t run = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint8_t v = p[i] ? 1 : 0;
    if (v != current) {
      counts.push_back(run);
      run = 0;
      current = v;
    }
    ++run;
  }
  counts.push_back(run);
  return counts;
}

std::vector<Detection> to_detections(const c10::Dict<c10::IValue, c10::IValue>& out) {
  auto get = [&](const char* key) -> torch::Tensor {
    auto it = out.find(key);
    return it == out.end() ? torch::Tensor() : it->value().toTensor().to(torch::kCPU);
  };
  torch::Tensor boxes = get("boxes").contiguous(), scores = get("scores").contiguous(), classes = get("classes");
  torch::Tensor masks = get("masks"), keypoints = get("keypoints");
  std::vector<Detection> dets(boxes.size(0));
  for (int64_t i = 0; i < boxes.size(0); ++i) {
    Detection& d = dets[i];
    d.cls = static_cast<int>(classes[i].item<int64_t>());
    d.score = scores[i].item<float>();
    for (int k = 0; k < 4; ++k) d.box[k] = boxes[i][k].item<float>();
    if (masks.defined()) {
      torch::Tensor m = masks[i].contiguous();
      d.mask_area = m.sum().item<int64_t>();
      d.mask_rle = column_major_rle(m);
    }
    if (keypoints.defined()) {
      torch::Tensor kp = keypoints[i].contiguous();
      d.keypoints.assign(kp.data_ptr<float>(), kp.data_ptr<float>() + kp.numel());
    }
  }
  return dets;
}

std::string class_name(const Metadata& meta, int cls) {
  if (cls >= 0 && cls < static_cast<int>(meta.classes.size())) return meta.classes[cls];
  return "class_" + std::to_string(cls);
}

cv::Scalar color_for(int i) {
  static const int palette[][3] = {{230, 25, 75}, {60, 180, 75}, {255, 225, 25}, {0, 130, 200}, {245, 130, 48},
                                   {145, 30, 180}, {70, 240, 240}, {240, 50, 230}, {210, 245, 60}, {250, 190, 212}};
  const int* c = palette[i % 10];
  return cv::Scalar(c[2], c[1], c[0]);  // OpenCV draws in BGR
}

void draw(const std::string& image_path, const std::string& out_path, const std::vector<Detection>& dets,
          const c10::Dict<c10::IValue, c10::IValue>& out, const Metadata& meta, float threshold) {
  cv::Mat canvas = cv::imread(image_path, cv::IMREAD_COLOR);
  auto it = out.find("masks");
  torch::Tensor masks = it == out.end() ? torch::Tensor() : it->value().toTensor().to(torch::kCPU).contiguous();
  for (size_t i = 0; i < dets.size(); ++i) {
    const Detection& d = dets[i];
    if (d.score < threshold) continue;
    cv::Scalar color = color_for(static_cast<int>(i));
    if (masks.defined()) {
      torch::Tensor m = masks[i].contiguous();
      cv::Mat mask(canvas.rows, canvas.cols, CV_8UC1, m.data_ptr<uint8_t>());
      cv::Mat tinted(canvas.size(), canvas.type(), color);
      cv::Mat blended;
      cv::addWeighted(canvas, 0.5, tinted, 0.5, 0.0, blended);
      blended.copyTo(canvas, mask);
    }
    cv::Point p0(static_cast<int>(d.box[0]), static_cast<int>(d.box[1]));
    cv::Point p1(static_cast<int>(d.box[2]), static_cast<int>(d.box[3]));
    cv::rectangle(canvas, p0, p1, color, 2);
    char label[128];
    std::snprintf(label, sizeof(label), "%s %.0f%%", class_name(meta, d.cls).c_str(), 100.0 * d.score);
    int baseline = 0;
    // Text about 1/40 of the image's short side (0.3 to 0.6 of Hershey's 22 px), kept inside the image.
    double font = std::min(0.6, std::max(0.3, std::min(canvas.rows, canvas.cols) / 40.0 / 22.0));
    cv::Size size = cv::getTextSize(label, cv::FONT_HERSHEY_SIMPLEX, font, 1, &baseline);
    cv::Point org(std::max(0, std::min(p0.x, canvas.cols - size.width)), std::max(p0.y - 3, size.height + 2));
    cv::rectangle(canvas, org + cv::Point(0, baseline), org + cv::Point(size.width, -size.height - 2), color, cv::FILLED);
    cv::putText(canvas, label, org, cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(255, 255, 255), 1, cv::LINE_AA);
    if (!d.keypoints.empty()) {
      size_t k = d.keypoints.size() / 3;
      auto pt = [&](size_t j) { return cv::Point(static_cast<int>(d.keypoints[3 * j]), static_cast<int>(d.keypoints[3 * j + 1])); };
      for (const auto& e : meta.skeleton)
        if (static_cast<size_t>(e.first) < k && static_cast<size_t>(e.second) < k)
          cv::line(canvas, pt(e.first), pt(e.second), color, 2, cv::LINE_AA);
      for (size_t j = 0; j < k; ++j) cv::circle(canvas, pt(j), 3, cv::Scalar(255, 255, 255), cv::FILLED, cv::LINE_AA);
    }
  }
  if (!cv::imwrite(out_path, canvas)) throw ExitError(5, "error: cannot write " + out_path);
}

std::string vis_path_for(const Options& opt, const std::string& image) {
  fs::path vis(opt.vis_path);
  if (opt.images.size() == 1 && vis.has_extension()) return vis.string();
  fs::create_directories(vis);
  return (vis / (fs::path(image).stem().string() + ".png")).string();
}

void write_json_image(std::ostream& os, const std::string& file, int h, int w, double ms,
                      const std::vector<Detection>& dets, const Metadata& meta) {
  os << "    {\"file\": \"" << minijson::escape(file) << "\", \"height\": " << h << ", \"width\": " << w
     << ", \"latency_ms\": " << ms << ", \"detections\": [";
  for (size_t i = 0; i < dets.size(); ++i) {
    const Detection& d = dets[i];
    char buf[256];
    std::snprintf(buf, sizeof(buf), "%s\n      {\"class\": %d, \"class_name\": \"%s\", \"score\": %.9g, \"box\": [%.9g, %.9g, %.9g, %.9g]",
                  i ? "," : "", d.cls, minijson::escape(class_name(meta, d.cls)).c_str(), d.score, d.box[0], d.box[1], d.box[2], d.box[3]);
    os << buf;
    if (d.mask_area >= 0) {
      os << ", \"mask_area\": " << d.mask_area << ", \"mask_rle\": {\"size\": [" << h << ", " << w << "], \"counts\": [";
      for (size_t j = 0; j < d.mask_rle.size(); ++j) os << (j ? ", " : "") << d.mask_rle[j];
      os << "]}";
    }
    if (!d.keypoints.empty()) {
      os << ", \"keypoints\": [";
      for (size_t j = 0; j < d.keypoints.size(); ++j) {
        std::snprintf(buf, sizeof(buf), "%s%.9g", j ? ", " : "", d.keypoints[j]);
        os << buf;
      }
      os << "]";
    }
    os << "}";
  }
  os << (dets.empty() ? "]}" : "\n    ]}");
}

int run(int argc, char** argv) {
  Options opt = parse_args(argc, argv);
  if (opt.threads > 0) at::set_num_threads(opt.threads);
  if (opt.device == "cuda" && !torch::cuda::is_available())
    throw ExitError(4, "error: --device cuda requested but no CUDA GPU is available");
  torch::Device device(opt.device == "cuda" ? torch::kCUDA : torch::kCPU);
  Metadata meta;
  torch::jit::Module module = load_model(opt, meta, device);
  std::cout << "model: " << opt.model << " (" << meta.classes.size() << " classes, input " << meta.format
            << ") on " << opt.device << ", " << at::get_num_threads() << " threads\n";

  std::ostringstream json;
  json << "{\n  \"model\": \"" << minijson::escape(opt.model) << "\",\n  \"device\": \"" << opt.device
       << "\",\n  \"images\": [\n";
  c10::InferenceMode guard;
  for (size_t n = 0; n < opt.images.size(); ++n) {
    const std::string& path = opt.images[n];
    torch::Tensor image = read_image(path, meta);
    int h = static_cast<int>(image.size(1)), w = static_cast<int>(image.size(2));
    c10::List<torch::Tensor> batch;
    batch.push_back(image);
    auto start = std::chrono::steady_clock::now();
    c10::IValue result;
    try {
      result = module.forward({batch});
      if (device.is_cuda()) torch::cuda::synchronize();
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw ExitError(5, "error: inference failed on " + path + ": " + what.substr(0, what.find('\n')));
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    auto out = result.toList().get(0).toGenericDict();
    std::vector<Detection> dets = to_detections(out);
    std::printf("%s: %dx%d, %zu detections, %.1f ms\n", path.c_str(), w, h, dets.size(), ms);
    for (const Detection& d : dets) {
      std::printf("  %-16s %.3f  box [%.1f, %.1f, %.1f, %.1f]", class_name(meta, d.cls).c_str(), d.score,
                  d.box[0], d.box[1], d.box[2], d.box[3]);
      if (d.mask_area >= 0) std::printf("  mask area %lld", static_cast<long long>(d.mask_area));
      std::printf("\n");
    }
    if (!opt.vis_path.empty()) draw(path, vis_path_for(opt, path), dets, out, meta, opt.vis_threshold);
    write_json_image(json, path, h, w, ms, dets, meta);
    json << (n + 1 < opt.images.size() ? ",\n" : "\n");
  }
  json << "  ]\n}\n";
  if (!opt.json_path.empty()) {
    std::ofstream f(opt.json_path);
    if (!f) throw ExitError(5, "error: cannot write " + opt.json_path);
    f << json.str();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const ExitError& e) {
    std::cerr << e.what() << "\n";
    if (e.code() == 2 && std::string(e.what()).find("--") != std::string::npos) usage();
    return e.code();
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::cerr << "error: " << what.substr(0, what.find('\n')) << "\n";
    return 5;
  }
}
