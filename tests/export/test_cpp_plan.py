"""The inference plan on load in the C++ library (export/cpp/tests/plan_test.cpp, ctest prefix
"plan."): a model exported here carries its plan and every alternative; the library applies the
plan where it was measured, measures again where the machine key differs (another thread count)
and caches that, refuses a plan file from another CPU, and runs Winograd's stages direct where
NNPACK is not usable; the detections agree under every plan."""
import json
import os
import re
import subprocess

import pytest
import torch

from mrcnn_plugin.export import export_model
from mrcnn_plugin.modeling import build_model
from tiny_models import tiny_mask_cfg


@pytest.fixture(scope="module")
def plan_model_ts(tmp_path_factory):
    """tiny_mask_cfg() with a 128-wide FPN and mask head (so Winograd has stages), exported with
    the fixed plan, as the suite runs (MRCNN_INFERENCE_PLAN=fixed)."""
    cfg = tiny_mask_cfg()
    cfg.merge_from_list(["MODEL.FPN.OUT_CHANNELS", 128, "MODEL.ROI_MASK_HEAD.CONV_DIM", 128])
    torch.manual_seed(0)
    return export_model(cfg, str(tmp_path_factory.mktemp("export_plan")), model=build_model(cfg).eval(),
                        plan="fixed")


def test_exported_model_json_records_the_plan(plan_model_ts):
    """model.json names the plan, where it was measured, the switches the file carries and that
    its Winograd stages need NNPACK."""
    meta = json.loads((plan_model_ts.parent / "model.json").read_text())
    plan, switches = meta["inference_plan"], meta["plan_switches"]
    assert plan["source"] == "fixed" and plan["machine"]["threads"] == torch.get_num_threads()
    assert set(switches["winograd"]) == {"backbone", "proposal_generator.rpn_head", "roi_heads.mask_head"}
    assert switches["pooled_conv"] and meta["needs"]["nnpack"] == bool(plan["winograd"])


def test_plan_gtests_pass(cpp_build, plan_model_ts, tmp_path):
    """ctest -R ^plan\\. : every plan test passes, none skipped."""
    env = dict(os.environ, MRCNN_TEST_PLAN_MODEL=str(plan_model_ts), MRCNN_TEST_PLAN_DIR=str(tmp_path))
    env.pop("MRCNN_NO_NNPACK", None)
    run = subprocess.run(["ctest", "--test-dir", str(cpp_build), "--output-on-failure", "--timeout", "300",
                          "--tests-regex", r"^plan\."], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = re.search(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", run.stdout)
    assert summary and summary.group(1) == "100" and int(summary.group(3)) == 5, run.stdout[-3000:]
    assert "Skipped" not in run.stdout and "Not Run" not in run.stdout, run.stdout[-3000:]
