"""Proposal generators: features -> candidate object boxes per image."""
from typing import Dict

from ...layers import ShapeSpec
from ...registry import PROPOSAL_GENERATOR_REGISTRY, build_from_registry
from .proposal_utils import find_top_rpn_proposals
from .rpn import RPN, StandardRPNHead, build_rpn_head

__all__ = ["RPN", "StandardRPNHead", "build_rpn_head", "build_proposal_generator", "find_top_rpn_proposals"]


def build_proposal_generator(cfg, input_shape: Dict[str, ShapeSpec]):
    """Builds MODEL.PROPOSAL_GENERATOR.NAME from the backbone's output shapes."""
    return build_from_registry(PROPOSAL_GENERATOR_REGISTRY, cfg.MODEL.PROPOSAL_GENERATOR.NAME, cfg, input_shape)
