// The inference plan on load (DetectorOptions::plan): the exported plan applied where it was
// measured, measured again (and cached) where the machine differs, a plan file from another
// machine refused, Winograd off without NNPACK, and the detections the same under every plan.
// Run by tests/export/test_cpp_plan.py with
//   MRCNN_TEST_PLAN_MODEL  a small model.ts with Winograd stages (128-wide FPN and mask head)
//   MRCNN_TEST_PLAN_DIR    an empty folder for caches and plan files
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "mrcnn/detector.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    ADD_FAILURE() << name << " is not set: run these tests through pytest tests/export/test_cpp_plan.py";
    return "";
  }
  return v;
}

std::string model() { return env("MRCNN_TEST_PLAN_MODEL"); }
fs::path dir() { return env("MRCNN_TEST_PLAN_DIR"); }

mrcnn::DetectorOptions options(const std::string& plan, const std::string& cache) {
  mrcnn::DetectorOptions o;
  o.plan = plan;
  o.plan_cache = (dir() / cache).string();
  o.warmup = false;  // tuning warms up its candidates; the tests compare results, not speed
  return o;
}

json plan_of(const mrcnn::Detector& d) { return json::parse(d.info().plan_json); }

json exported_plan(const mrcnn::Detector& d) { return json::parse(d.info().metadata_json)["inference_plan"]; }

cv::Mat photo() {
  cv::Mat image(96, 128, CV_8UC3);
  cv::RNG(3).fill(image, cv::RNG::UNIFORM, 0, 256);
  return image;
}

// Same detections up to float rounding: the plans change the arithmetic's order, not its result.
void expect_close(const mrcnn::ImageResult& a, const mrcnn::ImageResult& b) {
  ASSERT_GT(a.detections.size(), 0u);
  ASSERT_EQ(a.detections.size(), b.detections.size());
  for (size_t i = 0; i < a.detections.size(); ++i) {
    EXPECT_EQ(a.detections[i].class_id, b.detections[i].class_id);
    EXPECT_NEAR(a.detections[i].score, b.detections[i].score, 1e-3);
    for (int k = 0; k < 4; ++k) EXPECT_NEAR(a.detections[i].box[k], b.detections[i].box[k], 1e-2);
  }
}

class ThreadsRestored : public ::testing::Test {
 protected:
  void TearDown() override {
    mrcnn::DetectorOptions o = options("off", "-");
    o.intra_op_threads = threads_;
    o.warmup = false;
    mrcnn::Detector restore(model(), o);
  }
  int threads_ = mrcnn::intra_op_threads();
};

TEST(Plan, ThePlanMeasuredOnThisMachineIsAppliedAsExported) {
  mrcnn::Detector d(model(), options("auto", "cache-here"));
  json applied = plan_of(d), exported = exported_plan(d);
  EXPECT_EQ(d.info().plan_note, "as exported: measured on this machine");
  EXPECT_EQ(applied["source"], exported["source"]);
  EXPECT_EQ(applied["winograd"], exported["winograd"]);
  EXPECT_EQ(applied["channels_last"], exported["channels_last"]);
  EXPECT_FALSE(exported["winograd"].empty()) << "the test model should have Winograd stages";
  EXPECT_FALSE(fs::exists(dir() / "cache-here")) << "nothing measured, nothing cached";
}

TEST_F(ThreadsRestored, AnotherThreadCountIsMeasuredAgainThenReadFromTheCache) {
  int other = threads_ == 1 ? 2 : 1;  // the thread count is part of the machine key
  mrcnn::DetectorOptions o = options("auto", "cache-threads");
  o.intra_op_threads = other;
  mrcnn::Detector tuned(model(), o);
  json plan = plan_of(tuned);
  EXPECT_EQ(plan["source"], "auto");
  EXPECT_EQ(plan["machine"]["threads"], other);
  EXPECT_TRUE(plan["timings_ms"].contains("plain")) << plan.dump();
  EXPECT_GE(plan["timings_ms"].size(), 3u);
  EXPECT_NE(tuned.info().plan_note.find("threads: plan"), std::string::npos) << tuned.info().plan_note;
  // never slower than plain as measured
  double best = 1e30;
  for (const auto& [name, ms] : plan["timings_ms"].items()) best = std::min(best, ms.get<double>());
  EXPECT_LE(best, plan["timings_ms"]["plain"].get<double>());

  mrcnn::Detector again(model(), o);
  EXPECT_EQ(plan_of(again)["source"], "cache");
  EXPECT_EQ(plan_of(again)["winograd"], plan["winograd"]);
  EXPECT_EQ(plan_of(again)["channels_last"], plan["channels_last"]);

  mrcnn::Detector off(model(), options("off", "-"));
  expect_close(tuned.detect(photo()), off.detect(photo()));
}

TEST(Plan, APlanFileFromAnotherMachineIsRefusedOneFromThisMachineApplied) {
  mrcnn::Detector here(model(), options("auto", "-"));
  json plan = exported_plan(here);
  fs::create_directories(dir());
  std::ofstream(dir() / "here.json") << plan.dump();
  plan["machine"]["cpu"] = "Some Other CPU";
  std::ofstream(dir() / "elsewhere.json") << plan.dump();
  std::ofstream(dir() / "broken.json") << "{not json";

  mrcnn::Detector from_file(model(), options((dir() / "here.json").string(), "-"));
  EXPECT_EQ(plan_of(from_file)["source"], "file");
  try {
    mrcnn::Detector refused(model(), options((dir() / "elsewhere.json").string(), "-"));
    FAIL() << "a plan measured on another CPU was applied";
  } catch (const mrcnn::Error& e) {
    EXPECT_EQ(e.kind(), mrcnn::Error::Kind::kModel);
    EXPECT_NE(std::string(e.what()).find("measured on another machine"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Some Other CPU"), std::string::npos) << e.what();
  }
  try {
    mrcnn::Detector broken(model(), options((dir() / "broken.json").string(), "-"));
    FAIL() << "a broken plan file was accepted";
  } catch (const mrcnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken.json"), std::string::npos) << e.what();
  }
}

TEST(Plan, WithoutNnpackTheWinogradStagesRunDirect) {
  mrcnn::Detector with(model(), options("auto", "-"));
  ASSERT_FALSE(plan_of(with)["winograd"].empty());
  setenv("MRCNN_NO_NNPACK", "1", 1);
  mrcnn::Detector without(model(), options("auto", "-"));
  unsetenv("MRCNN_NO_NNPACK");
  EXPECT_TRUE(plan_of(without)["winograd"].empty()) << without.info().plan_json;
  EXPECT_NE(without.info().plan_note.find("NNPACK is not usable"), std::string::npos) << without.info().plan_note;
  expect_close(with.detect(photo()), without.detect(photo()));
}

TEST(Plan, OffTurnsEverySwitchOffAndKeepsTheDetections) {
  mrcnn::Detector off(model(), options("off", "-"));
  json plan = plan_of(off);
  EXPECT_EQ(plan["source"], "off");
  EXPECT_FALSE(plan["channels_last"].get<bool>());
  EXPECT_TRUE(plan["winograd"].empty());
  mrcnn::Detector exported(model(), options("exported", "-"));
  expect_close(off.detect(photo()), exported.detect(photo()));
}

}  // namespace
