"""Exporting trained models to other runtimes: ONNX (:func:`export_onnx`)."""

from lamina.export.onnx import export_onnx, register_converter

__all__ = ["export_onnx", "register_converter"]
