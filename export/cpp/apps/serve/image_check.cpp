#include "image_check.hpp"

#include <opencv2/imgcodecs.hpp>

#include <optional>
#include <utility>

namespace mrcnn::serve {
namespace {

using Size = std::pair<int64_t, int64_t>;  // width, height

uint32_t big_endian(std::string_view b, size_t at, int bytes) {
  uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(b[at + i]);
  return v;
}

bool is_png(std::string_view b) { return b.size() >= 8 && b.substr(0, 8) == std::string_view("\x89PNG\r\n\x1a\n", 8); }
bool is_jpeg(std::string_view b) { return b.size() >= 3 && static_cast<uint8_t>(b[0]) == 0xFF && static_cast<uint8_t>(b[1]) == 0xD8; }

// PNG: the IHDR chunk comes first, width and height at bytes 16 and 20.
std::optional<Size> png_size(std::string_view b) {
  if (b.size() < 24 || b.substr(12, 4) != "IHDR") return std::nullopt;
  return Size{big_endian(b, 16, 4), big_endian(b, 20, 4)};
}

// JPEG: walk the marker segments up to the first start-of-frame (SOF0-15 but DHT, JPG, DAC).
std::optional<Size> jpeg_size(std::string_view b) {
  size_t i = 2;
  while (i + 4 <= b.size()) {
    if (static_cast<uint8_t>(b[i]) != 0xFF) return std::nullopt;
    uint8_t marker = static_cast<uint8_t>(b[i + 1]);
    if (marker == 0xFF) { ++i; continue; }  // fill byte
    if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) { i += 2; continue; }
    size_t length = big_endian(b, i + 2, 2);
    bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (i + 9 > b.size()) return std::nullopt;
      return Size{big_endian(b, i + 7, 2), big_endian(b, i + 5, 2)};
    }
    i += 2 + length;
  }
  return std::nullopt;
}

// A JPEG ends with the end-of-image marker (some writers pad after it with zeros).
bool jpeg_complete(std::string_view b) {
  size_t end = b.size();
  while (end > 2 && b[end - 1] == '\0') --end;
  return end >= 4 && static_cast<uint8_t>(b[end - 2]) == 0xFF && static_cast<uint8_t>(b[end - 1]) == 0xD9;
}

}  // namespace

ImageCheck decode_image(std::string_view body, int64_t max_pixels) {
  if (body.empty()) return {400, "empty body: send the image's bytes (JPEG or PNG)", {}};
  std::optional<Size> size;
  if (is_png(body)) size = png_size(body);
  else if (is_jpeg(body)) {
    if (!jpeg_complete(body)) return {400, "truncated JPEG (no end-of-image marker)", {}};
    size = jpeg_size(body);
  } else {
    return {400, "not a JPEG or PNG image", {}};
  }
  if (!size) return {400, "cannot read the image's size from its header", {}};
  auto [w, h] = *size;
  if (w <= 0 || h <= 0) return {400, "the image header states a size of " + std::to_string(w) + "x" + std::to_string(h), {}};
  if (w * h > max_pixels)
    return {413, "image of " + std::to_string(w) + "x" + std::to_string(h) + " pixels is over the limit of " +
                     std::to_string(max_pixels) + " pixels", {}};
  cv::Mat image;
  try {
    image = cv::imdecode(cv::Mat(1, static_cast<int>(body.size()), CV_8UC1, const_cast<char*>(body.data())),
                         cv::IMREAD_COLOR);
  } catch (const cv::Exception&) {
    image.release();
  }
  if (image.empty()) return {400, "cannot decode the image (corrupt or truncated)", {}};
  return {200, "", image};
}

}  // namespace mrcnn::serve
