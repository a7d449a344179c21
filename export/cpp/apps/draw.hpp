// Pictures of detections: masks tinted, boxes, labels, keypoint skeletons.
#pragma once

#include "mrcnn/detector.hpp"

namespace mrcnn::apps {

// Draws on canvas (BGR) the detections scoring at least threshold. Masks are drawn when the
// detections hold them (MaskFormat::kMat).
void draw_detections(cv::Mat& canvas, const ImageResult& result, const ModelInfo& info, float threshold);

}  // namespace mrcnn::apps
