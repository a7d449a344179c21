#include "result_json.hpp"

namespace mrcnn::apps {

nlohmann::ordered_json image_json(const ImageResult& result, double latency_ms) {
  nlohmann::ordered_json detections = nlohmann::ordered_json::array();
  for (const Detection& d : result.detections) {
    nlohmann::ordered_json j = {{"class", d.class_id}, {"class_name", d.class_name}, {"score", d.score},
                        {"box", {d.box[0], d.box[1], d.box[2], d.box[3]}}};
    if (d.mask_area >= 0) {
      j["mask_area"] = d.mask_area;
      Rle rle = !d.rle.counts.empty() ? d.rle : (!d.mask.empty() ? encode_rle(d.mask) : Rle{});
      if (!rle.counts.empty()) j["mask_rle"] = {{"size", {rle.height, rle.width}}, {"counts", rle.counts}};
    }
    if (!d.keypoints.empty()) {
      nlohmann::ordered_json flat = nlohmann::ordered_json::array();
      for (const Keypoint& k : d.keypoints) {
        flat.push_back(k.x);
        flat.push_back(k.y);
        flat.push_back(k.score);
      }
      j["keypoints"] = std::move(flat);
    }
    detections.push_back(std::move(j));
  }
  return {{"height", result.height}, {"width", result.width}, {"latency_ms", latency_ms},
          {"detections", std::move(detections)}};
}

}  // namespace mrcnn::apps
