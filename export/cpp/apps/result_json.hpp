// The JSON of one image's results, shared by mrcnn_infer --json and mrcnn_serve's responses.
#pragma once

#include <nlohmann/json.hpp>

#include "mrcnn/detector.hpp"

namespace mrcnn::apps {

// {"height", "width", "latency_ms", "detections": [{"class", "class_name", "score", "box",
//  "mask_area", "mask_rle": {"size": [h, w], "counts": [...]}, "keypoints": [x, y, s, ...]}]}
// mask_area/mask_rle appear for mask models (mask_rle only when the mask was returned),
// keypoints for keypoint models. The RLE is encoded from Detection::mask when it holds the mask.
nlohmann::ordered_json image_json(const ImageResult& result, double latency_ms);

}  // namespace mrcnn::apps
