"""The `mrcnn` command."""
import json

from mrcnn_plugin.cli import main


def test_info_prints_parameters_and_flops(capsys, shared_dir):
    """`mrcnn info` reports the R50-FPN Mask R-CNN's parameter count (equal to the reference
    model's, summed from shared/golden/reference_state_dict_keys.json) and its FLOPs."""
    reference = json.loads((shared_dir / "golden" / "reference_state_dict_keys.json").read_text())
    expected = 0
    for key, shape in reference["mask_rcnn_R_50_FPN"].items():
        if not key.endswith(("running_mean", "running_var")) and ".norm." not in key:
            n = 1
            for s in shape:
                n *= s
            expected += n
    assert main(["info", "--config-file", "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
                 "--height", "128", "--width", "192", "MODEL.DEVICE", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"parameters: {expected:,}" in out
    gflops = float(out.split("multiply-adds (fvcore 'flops'): ")[1].split(" G")[0])
    assert gflops > 0
