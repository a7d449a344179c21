// mrcnn::Detector on LibTorch: loading, metadata, image conversion, results.
#include "mrcnn/detector.hpp"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unordered_map>

#include "plan.hpp"

namespace mrcnn {
namespace {

namespace fs = std::filesystem;

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

void parse_metadata(const std::string& text, ModelInfo& info) {
  info.metadata_json = text;
  if (text.empty()) return;  // a model exported without metadata: BGR input, generic names
  const nlohmann::json root = nlohmann::json::parse(text);
  if (root.contains("input") && root["input"].contains("format")) info.input_format = root["input"]["format"].get<std::string>();
  if (info.input_format != "BGR" && info.input_format != "RGB")
    throw std::runtime_error("input.format must be BGR or RGB, got " + info.input_format);
  for (const auto& c : root.value("classes", nlohmann::json::array())) info.classes.push_back(c.get<std::string>());
  for (const auto& k : root.value("keypoint_names", nlohmann::json::array())) info.keypoint_names.push_back(k.get<std::string>());
  std::unordered_map<std::string, int> index;
  for (size_t i = 0; i < info.keypoint_names.size(); ++i) index[info.keypoint_names[i]] = static_cast<int>(i);
  for (const auto& pair : root.value("keypoint_skeleton", nlohmann::json::array())) {
    if (!pair.is_array() || pair.size() < 2) continue;
    auto a = index.find(pair[0].get<std::string>()), b = index.find(pair[1].get<std::string>());
    if (a != index.end() && b != index.end()) info.skeleton.emplace_back(a->second, b->second);
  }
}

torch::Device parse_device(const std::string& name) {
  try {
    torch::Device device(name);
    if (device.is_cpu()) return device;
    if (device.is_cuda()) {
      if (!torch::cuda::is_available())
        throw Error(Error::Kind::kDevice, "device " + name + " requested but no CUDA GPU is available");
      if (device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count()))
        throw Error(Error::Kind::kDevice, "device " + name + " requested but this machine has " +
                                              std::to_string(torch::cuda::device_count()) + " GPU(s)");
      return device;
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception&) {
  }
  throw Error(Error::Kind::kDevice, "device must be cpu, cuda or cuda:N, got " + name);
}

// image (CV_8UC1/3/4, BGR order) -> uint8 Tensor[3, H, W] in the model's colour order.
torch::Tensor to_tensor(const cv::Mat& image, const std::string& format, size_t index) {
  const std::string which = "image " + std::to_string(index);
  if (image.empty()) throw Error(Error::Kind::kInput, which + " is empty (0x0)");
  if (image.depth() != CV_8U)
    throw Error(Error::Kind::kInput, which + " must have 8-bit channels (CV_8U), got depth " + std::to_string(image.depth()));
  cv::Mat bgr;
  switch (image.channels()) {
    case 1: cv::cvtColor(image, bgr, cv::COLOR_GRAY2BGR); break;
    case 3: bgr = image; break;
    case 4: cv::cvtColor(image, bgr, cv::COLOR_BGRA2BGR); break;
    default: throw Error(Error::Kind::kInput, which + " must have 1, 3 or 4 channels, got " + std::to_string(image.channels()));
  }
  cv::Mat ordered;
  if (format == "RGB") cv::cvtColor(bgr, ordered, cv::COLOR_BGR2RGB);
  else ordered = bgr;
  // Strided view of the Mat (which may be a region of a larger one); contiguous() copies.
  torch::Tensor hwc = torch::from_blob(ordered.data, {ordered.rows, ordered.cols, 3},
                                       {static_cast<int64_t>(ordered.step[0]), 3, 1}, torch::kUInt8);
  return hwc.permute({2, 0, 1}).contiguous();
}

ImageResult to_result(const c10::Dict<c10::IValue, c10::IValue>& out, int height, int width, const ModelInfo& info,
                      const DetectOptions& options) {
  auto get = [&](const char* key) -> torch::Tensor {
    auto it = out.find(key);
    return it == out.end() ? torch::Tensor() : it->value().toTensor().to(torch::kCPU).contiguous();
  };
  torch::Tensor boxes = get("boxes").to(torch::kFloat), scores = get("scores").to(torch::kFloat);
  torch::Tensor classes = get("classes").to(torch::kLong), masks = get("masks"), keypoints = get("keypoints");
  if (keypoints.defined()) keypoints = keypoints.to(torch::kFloat);
  ImageResult result{height, width, {}};
  auto box = boxes.accessor<float, 2>();
  auto score = scores.accessor<float, 1>();
  auto cls = classes.accessor<int64_t, 1>();
  for (int64_t i = 0; i < boxes.size(0); ++i) {
    if (score[i] < options.score_threshold) continue;
    Detection d;
    d.class_id = static_cast<int>(cls[i]);
    d.class_name = d.class_id >= 0 && d.class_id < static_cast<int>(info.classes.size())
                       ? info.classes[d.class_id] : "class_" + std::to_string(d.class_id);
    d.score = score[i];
    for (int k = 0; k < 4; ++k) d.box[k] = box[i][k];
    if (masks.defined()) {
      torch::Tensor m = masks[i];
      cv::Mat view(height, width, CV_8UC1, m.data_ptr<uint8_t>());
      d.mask_area = cv::countNonZero(view);
      if (options.masks == MaskFormat::kMat) d.mask = view.clone();  // the tensor's memory is not kept
      else if (options.masks == MaskFormat::kRle) d.rle = encode_rle(view);
    }
    if (keypoints.defined()) {
      torch::Tensor person = keypoints[i];
      auto kp = person.accessor<float, 2>();
      for (int64_t j = 0; j < kp.size(0); ++j) d.keypoints.push_back(Keypoint{kp[j][0], kp[j][1], kp[j][2]});
    }
    result.detections.push_back(std::move(d));
  }
  return result;
}

// The folder of measured plans (DetectorOptions::plan_cache); empty: no cache.
fs::path plan_cache_dir(const std::string& option) {
  if (option == "-") return {};
  if (!option.empty()) return option;
  if (const char* env = std::getenv("MRCNN_PLAN_CACHE"); env && *env) return env;
  if (const char* home = std::getenv("HOME"); home && *home) return fs::path(home) / ".cache" / "mrcnn_plugin" / "plans";
  return {};
}

// FNV-1a, 64 bits: a stable file name for (model metadata, machine).
std::string fnv1a_hex(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(h));
  return out;
}

nlohmann::json read_json_file(const fs::path& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot read it");
  return nlohmann::json::parse(f);
}

void write_json_atomically(const fs::path& path, const nlohmann::json& value) {
  fs::create_directories(path.parent_path());
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp);
    f << value.dump(2);
    if (!f) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
}

// A smooth random BGR image (low-frequency noise, like a photo's features), height x width.
cv::Mat synthetic_image(int height, int width) {
  cv::Mat coarse(std::max(height / 64, 2), std::max(width / 64, 2), CV_8UC3);
  cv::RNG(0).fill(coarse, cv::RNG::UNIFORM, 0, 256);
  cv::Mat image;
  cv::resize(coarse, image, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  return image;
}

}  // namespace

struct Detector::Impl {
  ModelInfo info;
  torch::Device device{torch::kCPU};
  mutable torch::jit::Module module;  // forward() is non-const on the handle; it only reads the shared module

  std::vector<ImageResult> run(const std::vector<cv::Mat>& images, const DetectOptions& options) const {
    c10::InferenceMode guard;
    c10::List<torch::Tensor> batch;
    for (size_t i = 0; i < images.size(); ++i) batch.push_back(to_tensor(images[i], info.input_format, i));
    c10::IValue output;
    try {
      output = module.forward({batch});
      if (device.is_cuda()) torch::cuda::synchronize();
    } catch (const std::exception& e) {
      throw Error(Error::Kind::kInference, "inference failed: " + first_line(e.what()));
    }
    c10::List<c10::IValue> outputs = output.toList();
    std::vector<ImageResult> results;
    results.reserve(images.size());
    for (size_t i = 0; i < images.size(); ++i)
      results.push_back(to_result(outputs.get(i).toGenericDict(), images[i].rows, images[i].cols, info, options));
    return results;
  }

  void choose_plan(const DetectorOptions& options);
};

// Applies DetectorOptions::plan to the loaded module and records it in info.plan_json / plan_note.
void Detector::Impl::choose_plan(const DetectorOptions& options) {
  using nlohmann::json;
  json meta = info.metadata_json.empty() ? json::object() : json::parse(info.metadata_json);
  if (!meta.contains("inference_plan")) {
    info.plan_note = "the model carries no inference plan (exported before plans): run as exported";
    return;
  }
  const json exported = meta["inference_plan"];
  if (exported.value("source", "") == "none") {
    info.plan_json = exported.dump();
    info.plan_note = "exported with --plan none: the network as built";
    return;
  }
  const json here = detail::machine_key(info.device);
  const std::string elsewhere = detail::mismatch(exported.value("machine", json::object()), here);
  json chosen = exported;
  if (options.plan == "off") {
    chosen = {{"format", 1}, {"channels_last", false}, {"pooled_conv", false}, {"winograd", json::array()},
              {"bf16", false}, {"source", "off"}, {"machine", here}};
    info.plan_note = "every switch off (plan = off)";
  } else if (options.plan == "exported") {
    info.plan_note = "as exported";
    if (!elsewhere.empty()) {
      info.plan_note += ", measured on another machine (" + elsewhere + ")";
      std::cerr << "mrcnn::Detector: warning: " << info.path << ": applying the exported plan measured on another machine ("
                << elsewhere << ")\n";
    }
  } else if (options.plan == "auto") {
    if (elsewhere.empty()) {
      info.plan_note = "as exported: measured on this machine";
    } else {
      fs::path dir = plan_cache_dir(options.plan_cache);
      fs::path cached = dir.empty() ? fs::path() : dir / ("cpp-" + fnv1a_hex(info.metadata_json + here.dump()) + ".json");
      bool hit = false;
      if (!cached.empty() && fs::exists(cached)) {
        try {
          json plan = read_json_file(cached);
          if (detail::mismatch(plan.value("machine", json::object()), here).empty()) {
            chosen = plan;
            chosen["source"] = "cache";
            info.plan_note = "measured here before (" + cached.string() + ")";
            hit = true;
          }
        } catch (const std::exception&) {  // a broken cache file is measured over
        }
      }
      if (!hit) {
        // Timed at the model's test size with every detection kept, as the Python tuner does.
        int h = meta["input"].value("min_size_test", 800), max_size = meta["input"].value("max_size_test", 1333);
        cv::Mat sample = synthetic_image(h, std::min(static_cast<int>(std::lround(h * 4.0 / 3.0)), max_size));
        torch::jit::Module predictor;
        bool has_thresh = false;
        for (const auto& item : module.named_modules())
          if (item.value.hasattr("test_score_thresh")) predictor = item.value, has_thresh = true;
        c10::IValue thresh = has_thresh ? predictor.attr("test_score_thresh") : c10::IValue();
        if (has_thresh) predictor.setattr("test_score_thresh", 0.0);
        try {
          chosen = detail::tune_plan(module, [&] { run({sample}, {0.f, MaskFormat::kNone}); },
                                     detail::plan_from_json(exported), info.device);
        } catch (...) {
          if (has_thresh) predictor.setattr("test_score_thresh", thresh);
          throw;
        }
        if (has_thresh) predictor.setattr("test_score_thresh", thresh);
        chosen["sample_hw"] = {sample.rows, sample.cols};
        info.plan_note = "measured here in " + std::to_string(chosen["tuning_s"].get<double>()) +
                         " s: the exported plan was measured on another machine (" + elsewhere + ")";
        if (!cached.empty()) {
          try {
            write_json_atomically(cached, chosen);
          } catch (const std::exception& e) {
            std::cerr << "mrcnn::Detector: warning: could not cache the plan at " << cached << ": " << e.what() << "\n";
          }
        }
      }
    }
  } else {
    json plan;
    try {
      plan = read_json_file(options.plan);
    } catch (const std::exception& e) {
      throw Error(Error::Kind::kModel, "plan file " + options.plan + ": " + first_line(e.what()));
    }
    std::string differs = detail::mismatch(plan.value("machine", json::object()), here);
    if (!differs.empty())
      throw Error(Error::Kind::kModel, "plan file " + options.plan + " was measured on another machine (" + differs +
                                           "): use plan = auto to measure here");
    chosen = plan;
    chosen["source"] = "file";
    info.plan_note = "from " + options.plan;
  }
  detail::Plan plan = detail::plan_from_json(chosen);
  if (!plan.winograd.empty() && !detail::nnpack_usable()) {
    chosen["winograd"] = json::array();
    info.plan_note += "; NNPACK is not usable here (not in this LibTorch, or MRCNN_NO_NNPACK=1): Winograd stages "
                      "run the direct convolution";
  }
  detail::apply_plan(module, plan);
  info.plan_json = chosen.dump();
}

Detector::Detector(const std::string& model_path, const DetectorOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.info.path = model_path;
  m.info.device = options.device;
  m.device = parse_device(options.device);
  if (options.intra_op_threads > 0) at::set_num_threads(options.intra_op_threads);
  if (!fs::exists(model_path)) throw Error(Error::Kind::kModel, "model file not found: " + model_path);
  if (!fs::is_regular_file(model_path)) throw Error(Error::Kind::kModel, "model path is not a file: " + model_path);
  torch::jit::ExtraFilesMap extra{{"model.json", ""}};
  try {
    m.module = torch::jit::load(model_path, torch::kCPU, extra);
  } catch (const std::exception& e) {
    throw Error(Error::Kind::kModel, model_path + " is not a TorchScript model written by `mrcnn export` (" +
                                         first_line(e.what()) + ")");
  }
  try {
    parse_metadata(extra["model.json"], m.info);
  } catch (const std::exception& e) {
    throw Error(Error::Kind::kModel, "bad metadata (model.json) in " + model_path + ": " + first_line(e.what()));
  }
  bool pad = options.pad_batch < 0 ? m.device.is_cuda() : options.pad_batch > 0;
  if (m.module.hasattr("pad_batch")) m.module.setattr("pad_batch", pad);
  else if (!pad && options.pad_batch == 0)
    throw Error(Error::Kind::kModel, model_path + " always pads its batches (exported before pad_batch): re-export it");
  m.module.eval();
  m.module.to(m.device);
  try {
    m.choose_plan(options);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(Error::Kind::kModel, "cannot apply the inference plan to " + model_path + ": " + first_line(e.what()));
  }
  if (options.warmup) warm_up();
}

void Detector::warm_up() const {
  // The profiling executor specialises and optimises the graph over the first two calls; the
  // calling thread's OpenMP team is created on the first.
  cv::Mat noise(480, 640, CV_8UC3);
  cv::RNG(0).fill(noise, cv::RNG::UNIFORM, 0, 256);
  for (int i = 0; i < 2; ++i) impl_->run({noise}, {0.f, MaskFormat::kNone});
}

Detector::~Detector() = default;
Detector::Detector(Detector&&) noexcept = default;
Detector& Detector::operator=(Detector&&) noexcept = default;

ImageResult Detector::detect(const cv::Mat& image, const DetectOptions& options) const {
  return impl_->run({image}, options).front();
}

std::vector<ImageResult> Detector::detect(const std::vector<cv::Mat>& images, const DetectOptions& options) const {
  if (images.empty()) return {};
  return impl_->run(images, options);
}

const ModelInfo& Detector::info() const { return impl_->info; }

int intra_op_threads() { return at::get_num_threads(); }

}  // namespace mrcnn
