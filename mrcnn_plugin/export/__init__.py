"""Deployment: one TorchScript file holding preprocessing, the network and postprocessing."""
from .exporter import export_metadata, export_model, find_foreign_ops, load_exported
from .inference_module import ExportableDetector

__all__ = ["ExportableDetector", "export_model", "export_metadata", "find_foreign_ops", "load_exported"]
