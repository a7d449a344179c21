// COCO uncompressed RLE of a binary mask, and back.
#include "mrcnn/detector.hpp"

namespace mrcnn {

Rle encode_rle(const cv::Mat& mask) {
  if (mask.type() != CV_8UC1) throw Error(Error::Kind::kInput, "encode_rle: the mask must be CV_8UC1");
  Rle rle{mask.rows, mask.cols, {}};
  // COCO runs go down each column in turn; transposing first keeps the scan sequential.
  cv::Mat columns = mask.t();
  uint8_t current = 0;
  uint32_t run = 0;
  for (int r = 0; r < columns.rows; ++r) {
    const uint8_t* p = columns.ptr<uint8_t>(r);
    for (int c = 0; c < columns.cols; ++c) {
      uint8_t v = p[c] ? 1 : 0;
      if (v != current) {
        rle.counts.push_back(run);
        run = 0;
        current = v;
      }
      ++run;
    }
  }
  rle.counts.push_back(run);
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
