// The fast inference plan on a loaded model.ts (see plan.hpp).
#include "plan.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

namespace mrcnn::detail {
namespace {

using json = nlohmann::json;

// The flags of utils/cpu.py's _ISA_FLAGS, in that order.
const char* const kIsaFlags[] = {"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                                 "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"};
// A flipped switch is kept only when at least this much faster (inference_plan._MIN_GAIN).
constexpr double kMinGain = 0.02;

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

json machine_key(const std::string& device) {
  std::string cpu = "unknown CPU";
  std::set<std::string> flags;
  std::ifstream info("/proc/cpuinfo");
  bool have_name = false, have_flags = false;
  for (std::string line; std::getline(info, line) && !(have_name && have_flags);) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = trim(line.substr(0, colon));
    if (key == "model name" && !have_name) {
      cpu = trim(line.substr(colon + 1));
      have_name = true;
    } else if (key == "flags" && !have_flags) {
      std::istringstream words(line.substr(colon + 1));
      for (std::string w; words >> w;) flags.insert(w);
      have_flags = true;
    }
  }
  json isa = json::array();
  for (const char* f : kIsaFlags)
    if (flags.count(f)) isa.push_back(f);
  json caps = {{"ATEN_CPU_CAPABILITY", env_or_empty("ATEN_CPU_CAPABILITY")},
               {"ONEDNN_MAX_CPU_ISA", env_or_empty("ONEDNN_MAX_CPU_ISA")}};
  std::string torch_version = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                              std::to_string(TORCH_VERSION_PATCH);
  return {{"cpu", cpu}, {"isa", isa}, {"isa_caps", caps}, {"threads", at::get_num_threads()},
          {"torch", torch_version}, {"device", device}};
}

std::string mismatch(const json& measured_on, const json& here) {
  if (!measured_on.is_object() || measured_on.empty()) return "the plan names no machine";
  std::string diffs;
  for (const auto& [key, value] : here.items()) {
    json theirs = measured_on.contains(key) ? measured_on[key] : json();
    if (theirs != value) diffs += (diffs.empty() ? "" : "; ") + key + ": plan " + theirs.dump() + ", here " + value.dump();
  }
  return diffs;
}

bool nnpack_usable() {
  std::string off = env_or_empty("MRCNN_NO_NNPACK");
  return at::globalContext().userEnabledNNPACK() && at::_nnpack_available() && (off.empty() || off == "0");
}

Plan plan_from_json(const json& plan) {
  Plan p;
  p.channels_last = plan.value("channels_last", false);
  p.pooled_conv = plan.value("pooled_conv", false);
  for (const auto& s : plan.value("winograd", json::array())) p.winograd.insert(s.get<std::string>());
  return p;
}

std::string label(const Plan& plan) {
  std::vector<std::string> parts;
  if (plan.channels_last) parts.push_back("cl");
  if (plan.pooled_conv) parts.push_back("pc");
  if (!plan.winograd.empty()) {
    std::string w = "wg(";
    for (const auto& s : plan.winograd) w += (w.size() > 3 ? "," : "") + s;
    parts.push_back(w + ")");
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "+") + p;
  return out.empty() ? "plain" : out;
}

std::set<std::string> plan_stages(const torch::jit::Module& module) {
  std::set<std::string> stages;
  for (const auto& item : module.named_modules())
    if (item.value.hasattr("use_winograd")) stages.insert(item.value.attr("plan_stage").toStringRef());
  return stages;
}

bool has_pooled(const torch::jit::Module& module) {
  for (const auto& item : module.named_modules())
    if (item.value.hasattr("pooled_as_conv")) return true;
  return false;
}

void apply_plan(torch::jit::Module& module, const Plan& plan) {
  torch::NoGradGuard no_grad;
  const bool winograd_ok = nnpack_usable();
  const bool as_conv = plan.pooled_conv && plan.channels_last;
  for (const auto& item : module.named_modules()) {
    torch::jit::Module sub = item.value;
    bool channels_last = plan.channels_last;
    if (sub.hasattr("use_winograd")) {
      bool on = winograd_ok && plan.winograd.count(sub.attr("plan_stage").toStringRef()) > 0;
      sub.setattr("use_winograd", on);
      if (on) channels_last = false;  // NNPACK reads NCHW weights
    }
    if (sub.hasattr("pooled_as_conv")) {
      sub.setattr("pooled_as_conv", as_conv);
      channels_last = as_conv;  // the matrix product views the weight as [O, C*S*S]
    }
    auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    for (const auto& p : sub.named_parameters(/*recurse=*/false)) {
      torch::Tensor weight = p.value;
      if (weight.dim() == 4) weight.set_data(weight.contiguous(format));
    }
  }
}

json tune_plan(torch::jit::Module& module, const std::function<void()>& run, const Plan& exported,
               const std::string& device) {
  auto start = std::chrono::steady_clock::now();
  std::set<std::string> stages = nnpack_usable() ? plan_stages(module) : std::set<std::string>{};
  std::map<std::string, double> timings;
  auto measure = [&](const Plan& plan) {
    std::string name = label(plan);
    auto found = timings.find(name);
    if (found != timings.end()) return found->second;
    apply_plan(module, plan);
    run();  // warm-up: graph optimisation, oneDNN primitives, weight reorders
    std::vector<double> ms;
    for (int i = 0; i < 2; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      run();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    double median = (ms[0] + ms[1]) / 2;  // the median of two, as Python's statistics.median
    timings[name] = median;
    return median;
  };
  Plan best;
  double best_ms = measure(best);
  Plan first = exported;
  std::set<std::string> usable;
  for (const auto& s : first.winograd)
    if (stages.count(s)) usable.insert(s);
  first.winograd = usable;
  double first_ms = measure(first);
  if (first_ms < best_ms * (1 - kMinGain)) best = first, best_ms = first_ms;
  std::vector<std::function<bool(Plan&)>> flips;
  flips.push_back([](Plan& p) {
    p.pooled_conv = p.pooled_conv && !p.channels_last;
    p.channels_last = !p.channels_last;
    return true;
  });
  if (has_pooled(module))
    flips.push_back([](Plan& p) {
      if (!p.channels_last) return false;
      p.pooled_conv = !p.pooled_conv;
      return true;
    });
  for (const auto& stage : stages)
    flips.push_back([stage](Plan& p) {
      if (!p.winograd.erase(stage)) p.winograd.insert(stage);
      return true;
    });
  for (const auto& flip : flips) {
    Plan candidate = best;
    if (!flip(candidate)) continue;
    double ms = measure(candidate);
    if (ms < best_ms * (1 - kMinGain)) best = candidate, best_ms = ms;
  }
  apply_plan(module, best);
  json timings_json = json::object();
  for (const auto& [name, ms] : timings) timings_json[name] = std::round(ms * 100) / 100;
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {{"format", 1}, {"channels_last", best.channels_last}, {"pooled_conv", best.pooled_conv},
          {"winograd", json(std::vector<std::string>(best.winograd.begin(), best.winograd.end()))},
          {"bf16", false}, {"source", "auto"}, {"machine", machine_key(device)}, {"timings_ms", timings_json},
          {"tuning_s", std::round(seconds * 100) / 100}, {"sample_hw", json::array()}, {"rewrites", json::object()}};
}

}  // namespace mrcnn::detail
