"""Analysis of architectures by shape inference (course notes, Computational resource
analysis, Receptive fields, Memory usage).

* :func:`summary` (also ``Module.summary``): the layer table with output volumes,
  parameters, MACs ("flops" in the notes), activation memory and a training-memory estimate.
* :func:`receptive_field`: the input region one unit of a layer sees.
* :func:`compare_architectures`: the course's comparison table, drawn (parameters vs MACs).

Everything is computed by tracing the model on a zero-sample batch with shape-only weights
(:mod:`lamina.analysis.trace`): no weight is allocated, so VGG16's table costs milliseconds.
"""

from lamina.analysis.compare import compare_architectures, native_input_shape, zoo_builder
from lamina.analysis.layer_rules import layer_hyperparameters, layer_macs
from lamina.analysis.receptive import receptive_field, receptive_fields
from lamina.analysis.summary import OPTIMIZER_STATES, Summary, summary
from lamina.analysis.trace import LayerCall, Trace, trace

__all__ = [
    "OPTIMIZER_STATES", "LayerCall", "Summary", "Trace", "compare_architectures", "layer_hyperparameters",
    "layer_macs", "native_input_shape", "receptive_field", "receptive_fields", "summary", "trace", "zoo_builder",
]
