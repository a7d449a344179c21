// What a request body must be before it is decoded: a whole JPEG or PNG of a bounded size.
//
// The header states the size; checking it first keeps a 100000 x 100000 PNG of a few bytes
// from making the decoder allocate 30 GB.
#pragma once

#include <opencv2/core.hpp>

#include <string>
#include <string_view>

namespace mrcnn::serve {

struct ImageCheck {
  int status = 200;     // 200, or the HTTP status to answer (400, 413)
  std::string message;  // why, for the error body
  cv::Mat image;        // BGR, decoded when status is 200
};

// Decodes body (JPEG or PNG) unless it is empty, of another kind, truncated, states more than
// max_pixels pixels, or does not decode.
ImageCheck decode_image(std::string_view body, int64_t max_pixels);

}  // namespace mrcnn::serve
