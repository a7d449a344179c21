"""Weights written as a detectron2 model-zoo .pkl, a Detectron (Caffe2) blob .pkl or a .pth load back
unchanged and reproduce the reference detectron2's detections.

The golden R50-FPN model (shared/golden: detectron2's outputs for the weights of
weights_rule.py) is written in each format, read into a model whose weights were
zeroed, compared tensor by tensor with the original, and run on the golden
chelsea photo, whose detections must match detectron2's (golden_match_rate >= 0.98).
The Detectron names are checked against Detectron's own conventions.
"""
import json

import numpy as np
import pytest
import torch

from golden_utils import build_golden_model, golden_match_rate, load_golden
from mrcnn_plugin.checkpoint import (DetectionCheckpointer, detectron2_to_detectron, detectron_to_detectron2,
                                     save_detectron_pkl, save_model_zoo_pkl, save_pth)
from mrcnn_plugin.checkpoint.safe_pickle import load_pickle

WRITERS = {"model_zoo_pkl": (save_model_zoo_pkl, "model.pkl"), "detectron_pkl": (save_detectron_pkl, "model.pkl"),
           "pth": (save_pth, "model.pth")}


@pytest.fixture(scope="module")
def golden_model(shared_dir):
    torch.set_num_threads(2)
    return build_golden_model(shared_dir, "mask_rcnn_R_50_FPN")


@pytest.fixture(scope="module")
def golden_state(golden_model):
    return {k: v.clone() for k, v in golden_model.state_dict().items()}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_round_trip_is_exact_and_reproduces_golden(fmt, golden_model, golden_state, shared_dir, tmp_path):
    """Written, zeroed, read back: every tensor equals the original bit for bit, nothing is reported,
    and the reloaded model reproduces detectron2's golden detections on chelsea."""
    writer, filename = WRITERS[fmt]
    path = str(tmp_path / filename)
    writer(golden_model, path)
    with torch.no_grad():
        for value in golden_model.state_dict().values():
            value.zero_()
    report = DetectionCheckpointer(golden_model).load(path)["load_report"]
    assert report.ok, report.table()
    assert report.loaded == len(golden_state)
    reloaded = golden_model.state_dict()
    assert reloaded.keys() == golden_state.keys()
    different = [k for k in golden_state if not torch.equal(reloaded[k], golden_state[k])]
    assert not different, f"tensors changed by the {fmt} round trip: {different[:5]}"

    golden = load_golden(shared_dir, "mask_rcnn_R_50_FPN", "chelsea")
    height, width = golden["orig_hw"]
    with torch.no_grad():
        outputs = golden_model.inference([{"image": golden["image_bgr_chw_uint8"], "height": height,
                                           "width": width}])[0]
    assert golden_match_rate(shared_dir, golden["final"], outputs) >= 0.98


def test_detectron_file_uses_detectron_names_and_background_first(golden_model, golden_state, tmp_path):
    """The Detectron file names blobs as Detectron does (res_conv1_bn_s, res2_0_branch2a_w,
    fpn_inner_res5_2_sum_w, fpn_inner_res4_5_sum_lateral_w, fpn_res2_2_sum_w, conv_rpn_fpn2_w,
    rpn_cls_logits_fpn2_w, fc6_w, cls_score_w, _[mask]_fcn1_w, conv5_mask_w, mask_fcn_logits_w) and puts
    the background class first: cls_score row 0 is detectron2's last row, the first 4 bbox_pred rows
    and mask channel 0 are background (zeros)."""
    path = tmp_path / "detectron.pkl"
    save_detectron_pkl(golden_state, str(path))
    blobs = load_pickle(path.read_bytes(), str(path))["blobs"]
    for name in ["conv1_w", "res_conv1_bn_s", "res_conv1_bn_b", "res2_0_branch2a_w", "res2_0_branch1_w",
                 "res2_0_branch2a_bn_s", "res5_2_branch2c_bn_b", "fpn_inner_res5_2_sum_w",
                 "fpn_inner_res4_5_sum_lateral_w", "fpn_inner_res2_2_sum_lateral_b", "fpn_res5_2_sum_w",
                 "fpn_res2_2_sum_b", "conv_rpn_fpn2_w", "rpn_cls_logits_fpn2_w", "rpn_bbox_pred_fpn2_b", "fc6_w",
                 "fc7_b", "cls_score_w", "bbox_pred_w", "_[mask]_fcn1_w", "_[mask]_fcn4_b", "conv5_mask_w",
                 "mask_fcn_logits_w"]:
        assert name in blobs, name
    cls = golden_state["roi_heads.box_predictor.cls_score.weight"].numpy()
    np.testing.assert_array_equal(blobs["cls_score_w"][0], cls[-1])
    np.testing.assert_array_equal(blobs["cls_score_w"][1:], cls[:-1])
    assert blobs["bbox_pred_w"].shape[0] == 81 * 4 and not blobs["bbox_pred_w"][:4].any()
    assert blobs["mask_fcn_logits_w"].shape[0] == 81 and not blobs["mask_fcn_logits_w"][0].any()


@pytest.mark.parametrize("name", ["mask_rcnn_R_50_C4", "keypoint_rcnn_R_50_FPN"])
def test_detectron_names_round_trip_for_c4_and_keypoint_models(name, shared_dir):
    """Every key of the reference C4 (res5 in the ROI heads) and keypoint (conv_fcn*, kps_score_lowres)
    models maps to a Detectron blob and back to itself, with values unchanged."""
    keys = json.loads((shared_dir / "golden" / "reference_state_dict_keys.json").read_text())[name]
    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in keys.items()}
    blobs = detectron2_to_detectron(state)
    expected_blobs = {"mask_rcnn_R_50_C4": ["res5_0_branch2a_w", "res4_5_branch2c_bn_s", "conv_rpn_w",
                                            "rpn_bbox_pred_w", "conv5_mask_w"],
                      "keypoint_rcnn_R_50_FPN": ["conv_fcn1_w", "conv_fcn8_b", "kps_score_lowres_w"]}[name]
    assert all(b in blobs for b in expected_blobs), sorted(blobs)[:20]
    back, _ = detectron_to_detectron2(blobs)
    assert back.keys() == state.keys()
    assert all(np.array_equal(back[k], state[k]) for k in state)
