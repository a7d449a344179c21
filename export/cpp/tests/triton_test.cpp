// The Triton wrapper (mrcnn export --triton) called the way Triton's PyTorch backend calls it:
// torch::jit::load of <model>/1/model.pt, forward with one positional uint8 tensor per
// configured input, outputs picked from the returned tuple by the index after "__" in each
// output name of config.pbtxt. Every output equals the matching result of model.ts, exactly.
//
//   MRCNN_TEST_TRITON_MODEL  the model's folder in the repository (holds config.pbtxt, 1/model.pt)
//   MRCNN_TEST_MODEL         the model.ts it was written from
//   MRCNN_TEST_PHOTOS        image files, separated by ':'
#include <gtest/gtest.h>

#include <ATen/core/Dict.h>
#include <torch/script.h>

#include <opencv2/imgcodecs.hpp>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    ADD_FAILURE() << name << " is not set: run this test through pytest tests/export/test_triton.py";
    return "";
  }
  return v;
}

// (name, tuple index) of each output in config.pbtxt, read as the backend reads them.
std::vector<std::pair<std::string, int>> config_outputs(const std::string& folder) {
  std::ifstream f(folder + "/config.pbtxt");
  EXPECT_TRUE(f.good()) << "cannot read " << folder << "/config.pbtxt";
  std::stringstream text;
  text << f.rdbuf();
  std::string config = text.str();
  size_t start = config.find("\noutput [");
  EXPECT_NE(start, std::string::npos) << "no output section in config.pbtxt";
  std::string section = config.substr(start, config.find("\n]", start) - start);
  std::vector<std::pair<std::string, int>> outputs;
  std::regex name(R"re(name: "([A-Z_]+)__([0-9]+)")re");
  for (std::sregex_iterator it(section.begin(), section.end(), name), end; it != end; ++it)
    outputs.emplace_back((*it)[1].str(), std::stoi((*it)[2].str()));
  return outputs;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

torch::Tensor chw_uint8(const cv::Mat& bgr) {
  return torch::from_blob(bgr.data, {bgr.rows, bgr.cols, 3}, torch::kUInt8).permute({2, 0, 1}).contiguous();
}

TEST(TritonWrapper, PositionalCallEqualsModelTs) {
  std::string folder = env("MRCNN_TEST_TRITON_MODEL");
  auto outputs = config_outputs(folder);
  ASSERT_GE(outputs.size(), 3u);
  c10::InferenceMode guard;  // the repository's config sets INFERENCE_MODE
  torch::jit::Module wrapper = torch::jit::load(folder + "/1/model.pt", torch::kCPU);
  torch::jit::Module model_ts = torch::jit::load(env("MRCNN_TEST_MODEL"), torch::kCPU);
  std::stringstream photos(env("MRCNN_TEST_PHOTOS"));
  int checked = 0;
  for (std::string path; std::getline(photos, path, ':');) {
    cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
    ASSERT_FALSE(bgr.empty()) << "cannot read " << path;
    torch::Tensor image = chw_uint8(bgr);
    c10::IValue result = wrapper.forward({image});
    ASSERT_TRUE(result.isTuple()) << "the backend reads a tuple of tensors";
    const auto& elements = result.toTupleRef().elements();
    ASSERT_EQ(elements.size(), outputs.size()) << "config.pbtxt must list every tuple element";
    c10::List<torch::Tensor> batch{image};
    auto reference = model_ts.forward({batch}).toList().get(0).toGenericDict();
    ASSERT_GT(reference.at("boxes").toTensor().size(0), 0) << path << ": the comparison needs detections";
    for (const auto& [name, index] : outputs) {
      ASSERT_LT(index, static_cast<int>(elements.size())) << name;
      torch::Tensor got = elements[index].toTensor(), want = reference.at(lower(name)).toTensor();
      EXPECT_EQ(got.scalar_type(), want.scalar_type()) << path << " " << name;
      EXPECT_TRUE(torch::equal(got, want)) << path << " " << name << ": differs from model.ts";
    }
    ++checked;
  }
  EXPECT_GE(checked, 2) << "MRCNN_TEST_PHOTOS should name at least two photos";
}

}  // namespace
