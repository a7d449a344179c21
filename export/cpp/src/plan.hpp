// The fast inference plan on a loaded model.ts: the same switches, machine key and greedy
// measurement as mrcnn_plugin/modeling/inference_plan.py, so that a model exported on one
// machine runs the plan measured on the one that loads it. Internal to the library.
#pragma once

#include <torch/script.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <set>
#include <string>

namespace mrcnn::detail {

struct Plan {
  bool channels_last = false;
  bool pooled_conv = false;
  std::set<std::string> winograd;  // stage paths ("backbone", "roi_heads.mask_head", ...)
};

// {"cpu", "isa", "isa_caps", "threads", "torch", "device"}, as inference_plan.machine_key writes it.
nlohmann::json machine_key(const std::string& device);
// "" when `measured_on` is this machine's key, else what differs ("threads: plan 4, here 2").
std::string mismatch(const nlohmann::json& measured_on, const nlohmann::json& here);
// NNPACK compiled into this LibTorch and not turned off by MRCNN_NO_NNPACK=1.
bool nnpack_usable();

Plan plan_from_json(const nlohmann::json& plan);
std::string label(const Plan& plan);  // "plain", "cl+pc+wg(backbone,...)", as InferencePlan.label
std::set<std::string> plan_stages(const torch::jit::Module& module);
bool has_pooled(const torch::jit::Module& module);

// Sets the switches on the module, in place (use_winograd, pooled_as_conv, 4-d weight layouts).
void apply_plan(torch::jit::Module& module, const Plan& plan);

// Times candidates by calling run() (plain, the exported plan, then one switch flipped at a time
// from the best, kept when >= 2% faster), leaves the fastest applied and returns it as a plan
// JSON in inference_plan's format, source "auto".
nlohmann::json tune_plan(torch::jit::Module& module, const std::function<void()>& run, const Plan& exported,
                         const std::string& device);

}  // namespace mrcnn::detail
