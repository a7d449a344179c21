// mrcnn::Detector: an exported mrcnn_plugin model (model.ts) behind a plain C++ interface.
//
//   mrcnn::Detector detector("out/model.ts", {.device = "cpu"});
//   mrcnn::ImageResult r = detector.detect(cv::imread("photo.jpg"));
//   for (const mrcnn::Detection& d : r.detections) use(d.class_name, d.score, d.box, d.rle);
//
// This header needs OpenCV's core module and the standard library only; LibTorch stays inside
// the library (libmrcnn_detector.so), so a service that links it needs no torch headers.
//
// Threads: one Detector may be called from many threads at once. What is shared is read-only
// after construction (the TorchScript module and its weights, the metadata); each call has
// its own input tensors, outputs and c10::InferenceMode guard. TorchScript's optimized graphs
// are built on the first calls (the warm-up at load does it) under the module's own lock.
//
// OpenMP (libgomp, which LibTorch's CPU kernels use): every thread that calls detect gets its
// own team of intra_op_threads, and once the process holds more OpenMP threads than CPUs, idle
// team threads sleep at once instead of spinning, so each of the model's many small parallel
// regions pays a wake-up. A detector warmed up on the main thread and then called from one
// worker thread ran 1.6x slower than on the main thread (small model, 2 threads, Xeon with
// AMX). So: call detect from a few long-lived threads, warm up on them (warmup = false, then
// warm_up() on each), and keep threads x intra_op_threads <= cores. mrcnn_serve does this.
#pragma once

#include <opencv2/core.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mrcnn {

// Every failure of the library: the message names the file or the input at fault.
class Error : public std::runtime_error {
 public:
  enum class Kind {
    kModel,      // missing or unreadable model file, not a model, bad metadata
    kInput,      // an image the model cannot take (empty, wrong type)
    kDevice,     // the requested device is not available
    kInference,  // the forward call failed
  };
  Error(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

// COCO's uncompressed RLE: run lengths over the column-major (Fortran) pixel order, the first
// run counting background pixels (possibly 0). pycocotools' frPyObjects reads it as is.
struct Rle {
  int height = 0;
  int width = 0;
  std::vector<uint32_t> counts;
};

Rle encode_rle(const cv::Mat& mask);  // mask: CV_8UC1, non-zero = foreground
cv::Mat decode_rle(const Rle& rle);   // CV_8UC1 of 0/1, rle.height x rle.width

struct Keypoint {
  float x = 0, y = 0, score = 0;  // original-image pixels; score as the model gives it
};

struct Detection {
  int class_id = 0;                  // index into ModelInfo::classes
  std::string class_name;            // "class_<id>" when the model names no classes
  float score = 0;
  std::array<float, 4> box{};        // x0, y0, x1, y1 in original-image pixels
  int64_t mask_area = -1;            // foreground pixels; -1 when the model has no mask head
  cv::Mat mask;                      // CV_8UC1 0/1, the full image (MaskFormat::kMat)
  Rle rle;                           // the same mask, encoded (MaskFormat::kRle)
  std::vector<Keypoint> keypoints;   // K per person (keypoint models)
};

struct ImageResult {
  int height = 0;
  int width = 0;
  std::vector<Detection> detections;  // in the model's order: descending score
};

enum class MaskFormat { kNone, kMat, kRle };

struct ModelInfo {
  std::string path;
  std::string device;                       // as given: "cpu", "cuda", "cuda:1"
  std::string input_format = "BGR";         // colour order the network expects
  std::vector<std::string> classes;
  std::vector<std::string> keypoint_names;
  std::vector<std::pair<int, int>> skeleton;  // keypoint index pairs to draw
  std::string metadata_json;                // model.json as written by `mrcnn export`
  std::string plan_json;   // the fast inference plan applied (inference_plan's JSON format); "" if none
  std::string plan_note;   // one line: how the plan was chosen ("measured here: ...", "as exported", ...)
};

struct DetectorOptions {
  std::string device = "cpu";  // "cpu", "cuda" or "cuda:N"
  bool warmup = true;          // warm_up() on the constructing thread before the constructor returns
  // -1: the model's default (each image on its own, results independent of the batch) on CPU,
  // detectron2's padded batch on CUDA; 0/1 force it. See export/README.md.
  int pad_batch = -1;
  int intra_op_threads = 0;    // >0: at::set_num_threads (process-wide); 0 leaves it
  // The fast inference plan (export/README.md, "The plan on load"). "auto": the plan in model.json
  // if it was measured on this machine (CPU, ISA, threads, torch, device), else the one cached for
  // this machine, else measured here at load (seconds to a minute for R50) and cached. "exported":
  // the plan in model.json wherever it was measured (a warning on stderr if elsewhere). "off":
  // every switch off. Anything else: a plan file (JSON), refused (Error kModel) if measured on
  // another machine. Where NNPACK is not usable (or MRCNN_NO_NNPACK=1) Winograd stays off.
  std::string plan = "auto";
  // Folder of measured plans: "" = $MRCNN_PLAN_CACHE or ~/.cache/mrcnn_plugin/plans; "-" = none.
  std::string plan_cache;
};

struct DetectOptions {
  float score_threshold = 0.f;           // drop detections scoring below it
  MaskFormat masks = MaskFormat::kRle;   // what each Detection's mask is returned as
};

// The intra-op threads LibTorch uses in this process (DetectorOptions::intra_op_threads sets it).
int intra_op_threads();

class Detector {
 public:
  // Loads model_path (a model.ts written by `mrcnn export`) with its embedded model.json.
  // Throws Error(kModel) for a missing file or one that is not such a model, Error(kDevice)
  // for an unavailable device.
  explicit Detector(const std::string& model_path, const DetectorOptions& options = {});
  ~Detector();
  Detector(Detector&&) noexcept;
  Detector& operator=(Detector&&) noexcept;

  // image: CV_8UC3 BGR (what cv::imread gives), CV_8UC1 grey or CV_8UC4 BGRA; any size.
  ImageResult detect(const cv::Mat& image, const DetectOptions& options = {}) const;
  // A batch of images of any sizes in one forward call; results in the same order.
  std::vector<ImageResult> detect(const std::vector<cv::Mat>& images, const DetectOptions& options = {}) const;

  // Two calls on a synthetic image: TorchScript optimises its graph over the first calls, and
  // the calling thread's OpenMP team is created. Run it on the thread that will call detect.
  void warm_up() const;

  const ModelInfo& info() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mrcnn
