"""Exporting trained models to other runtimes: ONNX (:func:`export_onnx`; CLIP's two towers
by :func:`export_clip_onnx`), and importing ONNX models as lamina modules (:func:`load_onnx`)."""

from lamina.export.onnx import export_onnx, register_converter
from lamina.export.onnx_clip import export_clip_onnx
from lamina.export.onnx_import import OnnxModule, load_onnx, register_onnx_op, supported_onnx_ops

__all__ = ["OnnxModule", "export_clip_onnx", "export_onnx", "load_onnx", "register_converter", "register_onnx_op",
           "supported_onnx_ops"]
