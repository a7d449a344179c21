// mrcnn::Detector: parity with the Python model on real photos, batches equal to single
// calls, many threads on one Detector equal to serial calls, errors that name the input.
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "mrcnn/detector.hpp"

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    ADD_FAILURE() << name << " is not set: run these tests through pytest tests/export/test_cpp_library.py";
    return "";
  }
  return v;
}

nlohmann::json reference() {
  std::ifstream f(env("MRCNN_TEST_REFERENCE"));
  EXPECT_TRUE(f.good()) << "cannot read MRCNN_TEST_REFERENCE";
  return nlohmann::json::parse(f);
}

std::vector<cv::Mat> reference_images(const nlohmann::json& ref) {
  std::vector<cv::Mat> images;
  for (const auto& image : ref["images"]) images.push_back(cv::imread(image["file"].get<std::string>(), cv::IMREAD_COLOR));
  return images;
}

// Bitwise equality of two results, masks compared as RLE.
void expect_identical(const mrcnn::ImageResult& a, const mrcnn::ImageResult& b) {
  ASSERT_EQ(a.detections.size(), b.detections.size());
  for (size_t i = 0; i < a.detections.size(); ++i) {
    const mrcnn::Detection &x = a.detections[i], &y = b.detections[i];
    EXPECT_EQ(x.class_id, y.class_id);
    EXPECT_EQ(x.score, y.score);
    EXPECT_EQ(x.box, y.box);
    EXPECT_EQ(x.mask_area, y.mask_area);
    EXPECT_EQ(x.rle.counts, y.rle.counts);
  }
}

TEST(Rle, RoundTripsAndFollowsCocoColumnOrder) {
  cv::Mat mask = cv::Mat::zeros(3, 4, CV_8UC1);
  mask.at<uint8_t>(0, 1) = 1;  // column 1, first pixel: 3 background pixels of column 0 come first
  mask.at<uint8_t>(1, 1) = 255;
  mask.at<uint8_t>(2, 3) = 1;
  mrcnn::Rle rle = mrcnn::encode_rle(mask);
  EXPECT_EQ(rle.counts, (std::vector<uint32_t>{3, 2, 6, 1}));
  cv::Mat back = mrcnn::decode_rle(rle);
  EXPECT_EQ(cv::countNonZero(back != (mask > 0) / 255), 0);
  EXPECT_EQ(mrcnn::encode_rle(cv::Mat::zeros(2, 2, CV_8UC1)).counts, (std::vector<uint32_t>{4}));
  EXPECT_EQ(mrcnn::encode_rle(cv::Mat::ones(2, 3, CV_8UC1)).counts, (std::vector<uint32_t>{0, 6}));
  EXPECT_EQ(mrcnn::encode_rle(cv::Mat::ones(1, 3, CV_8UC1)).counts, (std::vector<uint32_t>{0, 3}));
}

// The encoder finds runs with whole-image operations; a pixel-by-pixel walk down the columns
// (COCO's definition) must give the same counts on random masks of odd sizes.
TEST(Rle, EqualsAColumnByColumnWalkOnRandomMasks) {
  cv::RNG rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    int h = rng.uniform(1, 40), w = rng.uniform(1, 40);
    cv::Mat noise(h, w, CV_8UC1), mask;
    rng.fill(noise, cv::RNG::UNIFORM, 0, 256);
    cv::threshold(noise, mask, rng.uniform(0, 256), 1, cv::THRESH_BINARY);
    std::vector<uint32_t> walk{0};
    uint8_t current = 0;
    for (int c = 0; c < w; ++c)
      for (int r = 0; r < h; ++r) {
        uint8_t v = mask.at<uint8_t>(r, c) ? 1 : 0;
        if (v != current) walk.push_back(0), current = v;
        ++walk.back();
      }
    EXPECT_EQ(mrcnn::encode_rle(mask).counts, walk) << h << "x" << w << " trial " << trial;
  }
}

// The R50-FPN model's detections equal the Python model's: same classes in the same order,
// boxes within 0.05 px, scores within 1e-4, mask IoU > 0.99 (or <= 4 pixels differ), keypoints
// within 0.05 px. The Python side is the same exported file's eager twin.
TEST(Detector, EqualsPythonOnCocoPhotos) {
  nlohmann::json ref = reference();
  mrcnn::Detector detector(ref["model"].get<std::string>(), {"cpu", false, -1, 2});
  std::vector<cv::Mat> images = reference_images(ref);
  size_t compared = 0;
  for (size_t n = 0; n < images.size(); ++n) {
    const auto& expected = ref["images"][n]["detections"];
    mrcnn::ImageResult r = detector.detect(images[n]);
    ASSERT_EQ(r.detections.size(), expected.size()) << "image " << n;
    for (size_t i = 0; i < expected.size(); ++i) {
      const mrcnn::Detection& d = r.detections[i];
      const auto& e = expected[i];
      EXPECT_EQ(d.class_id, e["class"].get<int>());
      EXPECT_NEAR(d.score, e["score"].get<float>(), 1e-4);
      for (int k = 0; k < 4; ++k) EXPECT_NEAR(d.box[k], e["box"][k].get<float>(), 0.05);
      if (e.contains("mask_rle")) {
        mrcnn::Rle er{e["mask_rle"]["size"][0].get<int>(), e["mask_rle"]["size"][1].get<int>(),
                      e["mask_rle"]["counts"].get<std::vector<uint32_t>>()};
        cv::Mat ours = mrcnn::decode_rle(d.rle), theirs = mrcnn::decode_rle(er);
        ASSERT_EQ(ours.size(), theirs.size());
        int inter = cv::countNonZero(ours & theirs), uni = cv::countNonZero(ours | theirs);
        int differ = cv::countNonZero(ours ^ theirs);
        EXPECT_TRUE(uni == 0 || inter > 0.99 * uni || differ <= 4) << "image " << n << " detection " << i;
        EXPECT_EQ(d.mask_area, cv::countNonZero(ours));
      }
      if (e.contains("keypoints")) {
        const auto& kp = e["keypoints"];
        ASSERT_EQ(d.keypoints.size() * 3, kp.size());
        for (size_t j = 0; j < d.keypoints.size(); ++j) {
          EXPECT_NEAR(d.keypoints[j].x, kp[3 * j].get<float>(), 0.05);
          EXPECT_NEAR(d.keypoints[j].y, kp[3 * j + 1].get<float>(), 0.05);
        }
      }
      ++compared;
    }
  }
  EXPECT_GT(compared, 0u) << "no detections were compared";
}

// Three photos of different sizes in one forward call give what three single calls give,
// bit for bit (the model runs each image on its own unless pad_batch is set).
TEST(Detector, BatchOfDifferentSizesEqualsOneByOne) {
  nlohmann::json ref = reference();
  mrcnn::Detector detector(env("MRCNN_TEST_MODEL"), {"cpu", true, -1, 1});
  std::vector<cv::Mat> images = reference_images(ref);
  ASSERT_GE(images.size(), 3u);
  ASSERT_NE(images[0].size(), images[1].size());
  std::vector<mrcnn::ImageResult> batch = detector.detect(images);
  ASSERT_EQ(batch.size(), images.size());
  size_t total = 0;
  for (size_t n = 0; n < images.size(); ++n) {
    expect_identical(batch[n], detector.detect(images[n]));
    EXPECT_EQ(batch[n].height, images[n].rows);
    EXPECT_EQ(batch[n].width, images[n].cols);
    total += batch[n].detections.size();
  }
  EXPECT_GT(total, 0u) << "no detections: the comparison would prove nothing";
}

// 8 threads x 5 calls on one Detector, each thread on its own image, equal bitwise to the
// serial results. One intra-op thread per call, as a service with many callers would run.
TEST(Detector, ManyThreadsOnOneDetectorEqualSerialCalls) {
  nlohmann::json ref = reference();
  mrcnn::Detector detector(env("MRCNN_TEST_MODEL"), {"cpu", true, -1, 1});
  std::vector<cv::Mat> photos = reference_images(ref);
  std::vector<cv::Mat> images;
  for (int t = 0; t < 8; ++t) {
    const cv::Mat& photo = photos[t % photos.size()];
    // Each thread its own size: a crop of a photo, shrinking with the thread index.
    images.push_back(photo(cv::Rect(0, 0, photo.cols - 17 * t, photo.rows - 11 * t)));
  }
  std::vector<mrcnn::ImageResult> serial;
  for (const cv::Mat& image : images) serial.push_back(detector.detect(image));
  std::vector<std::vector<mrcnn::ImageResult>> parallel(images.size());
  std::vector<std::string> errors(images.size());
  std::vector<std::thread> threads;
  for (size_t t = 0; t < images.size(); ++t)
    threads.emplace_back([&, t] {
      try {
        for (int call = 0; call < 5; ++call) parallel[t].push_back(detector.detect(images[t]));
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < images.size(); ++t) {
    ASSERT_EQ(errors[t], "") << "thread " << t;
    ASSERT_EQ(parallel[t].size(), 5u);
    for (const auto& r : parallel[t]) expect_identical(r, serial[t]);
  }
}

void expect_error(const std::function<void()>& call, mrcnn::Error::Kind kind, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "no exception; expected one containing: " << needle;
  } catch (const mrcnn::Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Detector, BadModelsAndImagesAreErrorsThatNameThem) {
  expect_error([] { mrcnn::Detector("no/such/model.ts"); }, mrcnn::Error::Kind::kModel,
               "model file not found: no/such/model.ts");
  std::string text = testing::TempDir() + "not_a_model.ts";
  std::ofstream(text) << "not a model";
  expect_error([&] { mrcnn::Detector d(text); }, mrcnn::Error::Kind::kModel, text + " is not a TorchScript model");
  expect_error([] { mrcnn::Detector(env("MRCNN_TEST_MODEL"), {"tpu"}); }, mrcnn::Error::Kind::kDevice,
               "device must be cpu, cuda or cuda:N, got tpu");
  mrcnn::Detector detector(env("MRCNN_TEST_MODEL"), {"cpu", false});
  expect_error([&] { detector.detect(cv::Mat()); }, mrcnn::Error::Kind::kInput, "image 0 is empty");
  cv::Mat ok(64, 64, CV_8UC3, cv::Scalar(0, 0, 0));
  expect_error([&] { detector.detect(std::vector<cv::Mat>{ok, cv::Mat(8, 8, CV_32FC3)}); }, mrcnn::Error::Kind::kInput,
               "image 1 must have 8-bit channels");
  // The detector still answers after the errors.
  EXPECT_EQ(detector.detect(ok).height, 64);
}

// Without a GPU, a CUDA device is an error naming it; with one, the detector runs there and
// agrees with the CPU.
TEST(Detector, CudaDeviceRunsOrIsAnError) {
  nlohmann::json ref = reference();
  std::vector<cv::Mat> images = reference_images(ref);
  try {
    mrcnn::Detector gpu(env("MRCNN_TEST_MODEL"), {"cuda"});
    mrcnn::Detector cpu(env("MRCNN_TEST_MODEL"), {"cpu", false});
    mrcnn::ImageResult a = gpu.detect(images[0]), b = cpu.detect(images[0]);
    ASSERT_EQ(a.detections.size(), b.detections.size());
    for (size_t i = 0; i < a.detections.size(); ++i) EXPECT_NEAR(a.detections[i].score, b.detections[i].score, 1e-3);
  } catch (const mrcnn::Error& e) {
    EXPECT_EQ(e.kind(), mrcnn::Error::Kind::kDevice);
    EXPECT_NE(std::string(e.what()).find("no CUDA GPU"), std::string::npos) << e.what();
  }
}

}  // namespace
