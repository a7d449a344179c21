#include "draw.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdio>

namespace mrcnn::apps {
namespace {

cv::Scalar color_for(size_t i) {
  static const int palette[][3] = {{230, 25, 75}, {60, 180, 75}, {255, 225, 25}, {0, 130, 200}, {245, 130, 48},
                                   {145, 30, 180}, {70, 240, 240}, {240, 50, 230}, {210, 245, 60}, {250, 190, 212}};
  const int* c = palette[i % 10];
  return cv::Scalar(c[2], c[1], c[0]);  // OpenCV draws in BGR
}

void draw_label(cv::Mat& canvas, const Detection& d, cv::Point p0, cv::Scalar color) {
  char label[128];
  std::snprintf(label, sizeof(label), "%s %.0f%%", d.class_name.c_str(), 100.0 * d.score);
  int baseline = 0;
  // Text about 1/40 of the image's short side (0.3 to 0.6 of Hershey's 22 px), kept inside the image.
  double font = std::min(0.6, std::max(0.3, std::min(canvas.rows, canvas.cols) / 40.0 / 22.0));
  cv::Size size = cv::getTextSize(label, cv::FONT_HERSHEY_SIMPLEX, font, 1, &baseline);
  cv::Point org(std::max(0, std::min(p0.x, canvas.cols - size.width)), std::max(p0.y - 3, size.height + 2));
  cv::rectangle(canvas, org + cv::Point(0, baseline), org + cv::Point(size.width, -size.height - 2), color, cv::FILLED);
  cv::putText(canvas, label, org, cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(255, 255, 255), 1, cv::LINE_AA);
}

void draw_keypoints(cv::Mat& canvas, const Detection& d, const ModelInfo& info, cv::Scalar color) {
  auto pt = [&](size_t j) { return cv::Point(static_cast<int>(d.keypoints[j].x), static_cast<int>(d.keypoints[j].y)); };
  const size_t k = d.keypoints.size();
  for (const auto& e : info.skeleton)
    if (static_cast<size_t>(e.first) < k && static_cast<size_t>(e.second) < k)
      cv::line(canvas, pt(e.first), pt(e.second), color, 2, cv::LINE_AA);
  for (size_t j = 0; j < k; ++j) cv::circle(canvas, pt(j), 3, cv::Scalar(255, 255, 255), cv::FILLED, cv::LINE_AA);
}

}  // namespace

void draw_detections(cv::Mat& canvas, const ImageResult& result, const ModelInfo& info, float threshold) {
  for (size_t i = 0; i < result.detections.size(); ++i) {
    const Detection& d = result.detections[i];
    if (d.score < threshold) continue;
    cv::Scalar color = color_for(i);
    if (!d.mask.empty()) {
      cv::Mat tinted(canvas.size(), canvas.type(), color), blended;
      cv::addWeighted(canvas, 0.5, tinted, 0.5, 0.0, blended);
      blended.copyTo(canvas, d.mask);
    }
    cv::Point p0(static_cast<int>(d.box[0]), static_cast<int>(d.box[1]));
    cv::Point p1(static_cast<int>(d.box[2]), static_cast<int>(d.box[3]));
    cv::rectangle(canvas, p0, p1, color, 2);
    draw_label(canvas, d, p0, color);
    if (!d.keypoints.empty()) draw_keypoints(canvas, d, info, color);
  }
}

}  // namespace mrcnn::apps
