// COCO uncompressed RLE of a binary mask, and back.
#include "mrcnn/detector.hpp"

#include <algorithm>
#include <cstring>

#include <opencv2/core.hpp>

namespace mrcnn {

Rle encode_rle(const cv::Mat& mask) {
  if (mask.type() != CV_8UC1) throw Error(Error::Kind::kInput, "encode_rle: the mask must be CV_8UC1");
  const int h = mask.rows, w = mask.cols;
  Rle rle{h, w, {}};
  // COCO runs go down each column in turn. Rather than visit the pixels in that (strided)
  // order, find where the value changes with whole-image vector operations and sort those few
  // positions into column-major order: 100 masks of 640x480 took 26 ms pixel by pixel (even
  // transposed first), 9.5 ms this way (Xeon, one thread).
  thread_local cv::Mat binary, down;  // reused: fresh buffers of this size cost page faults
  cv::compare(mask, 0, binary, cv::CMP_NE);  // 0 or 255
  std::vector<int64_t> changes;              // column-major indices where a new run starts
  if (h > 1) {
    // down(r, c) set: pixel (r + 1, c) differs from (r, c)
    cv::bitwise_xor(binary.rowRange(1, h), binary.rowRange(0, h - 1), down);
    for (int r = 0; r + 1 < h; ++r) {  // sparse: skip 8 unchanged pixels at a time
      const uint8_t* row = down.ptr<uint8_t>(r);
      for (int c = 0; c < w;) {
        uint64_t word = 0;
        if (c + 8 <= w && (std::memcpy(&word, row + c, 8), word == 0)) {
          c += 8;
          continue;
        }
        if (row[c]) changes.push_back(static_cast<int64_t>(c) * h + r + 1);
        ++c;
      }
    }
  }
  for (int c = 0; h > 0 && c < w; ++c) {  // a column's top pixel follows the previous column's bottom one
    uint8_t previous = c == 0 ? 0 : binary.at<uint8_t>(h - 1, c - 1);
    if (binary.at<uint8_t>(0, c) != previous) changes.push_back(static_cast<int64_t>(c) * h);
  }
  std::sort(changes.begin(), changes.end());
  int64_t start = 0;
  for (int64_t change : changes) {
    rle.counts.push_back(static_cast<uint32_t>(change - start));
    start = change;
  }
  rle.counts.push_back(static_cast<uint32_t>(static_cast<int64_t>(h) * w - start));
  return rle;
}

cv::Mat decode_rle(const Rle& rle) {
  cv::Mat columns = cv::Mat::zeros(rle.width, rle.height, CV_8UC1);  // transposed: column-major order
  const size_t total = static_cast<size_t>(rle.height) * static_cast<size_t>(rle.width);
  size_t pos = 0;
  uint8_t value = 0;
  for (uint32_t run : rle.counts) {
    if (pos + run > total) throw Error(Error::Kind::kInput, "decode_rle: the runs cover more pixels than the mask has");
    if (value) std::fill_n(columns.data + pos, run, uint8_t{1});
    pos += run;
    value ^= 1;
  }
  return columns.t();
}

}  // namespace mrcnn
