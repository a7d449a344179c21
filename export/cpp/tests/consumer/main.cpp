// consumer MODEL WIDTH HEIGHT: runs the detector on a synthetic image and prints the count.
#include <cstdio>
#include <cstdlib>

#include "mrcnn/detector.hpp"

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  try {
    mrcnn::Detector detector(argv[1]);
    cv::Mat image(std::atoi(argv[3]), std::atoi(argv[2]), CV_8UC3);
    cv::randu(image, 0, 256);
    mrcnn::ImageResult r = detector.detect(image, {0.f, mrcnn::MaskFormat::kRle});
    std::printf("%d x %d: %zu detections\n", r.width, r.height, r.detections.size());
    return 0;
  } catch (const mrcnn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
