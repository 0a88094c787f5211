"""The layer table of the detectors, LR-ASPP, GPT-2, BERT, an imported ONNX graph, the
spectral convolutions, Rearrange/Reduce and the preprocessing layers: the totals equal the
models' published or counted parameters, and the layers that report MACs are counted."""

import numpy as np
import pytest

import lamina
from lamina import models, nn
from lamina.analysis import summary

# torchvision's parameter counts (default builders, 91 COCO classes / 21 VOC classes)
PUBLISHED = [
    ("retinanet_resnet50_fpn", 34_014_999, (64, 64, 3)),
    ("fcos_resnet50_fpn", 32_269_600, (64, 64, 3)),
    ("fasterrcnn_resnet50_fpn", 41_755_286, (64, 64, 3)),
    ("fasterrcnn_mobilenet_v3_large_fpn", 19_386_354, (64, 64, 3)),
    ("maskrcnn_resnet50_fpn", 44_401_393, (64, 64, 3)),
    ("ssd300_vgg16", 35_641_826, (300, 300, 3)),
    ("ssdlite320_mobilenet_v3_large", 3_440_060, (320, 320, 3)),
    ("lraspp_mobilenet_v3_large", 3_221_538, (64, 64, 3)),
]


@pytest.mark.parametrize("name, count, shape", PUBLISHED)
def test_detectors_and_lraspp_total_their_published_counts(name, count, shape):
    table = summary(getattr(models, name), shape)     # the builder: shape-only weights
    assert table.total_params == count
    assert table.total_macs > 0
    convs = [r for r in table.rows if r["type"] == "Conv2D"]
    assert convs and all(r["macs"] > 0 for r in convs)
    assert "Total params: " + f"{count:,}" in str(table)


def test_two_stage_detectors_size_the_heads_of_the_proposals():
    table = summary(models.fasterrcnn_resnet50_fpn, (64, 64, 3))
    names = [r["name"] for r in table.rows]
    assert "rpn.head.conv.0.0" in names and "roi_heads.box_predictor.bbox_pred" in names
    fc6 = next(r for r in table.rows if r["name"] == "roi_heads.box_head.fc6")
    assert fc6["input_shape"] == [7 * 7 * 256] and fc6["output_shape"] == [1024]     # one proposal
    assert fc6["macs"] == 7 * 7 * 256 * 1024
    assert table.uncalled_params == 0


def test_mask_head_that_runs_only_on_detections_is_named_not_sized():
    table = summary(models.maskrcnn_resnet50_fpn, (64, 64, 3))
    assert table.uncalled_layers == ["roi_heads.mask_head", "roi_heads.mask_predictor"]
    faster = summary(models.fasterrcnn_resnet50_fpn, (64, 64, 3))
    assert table.uncalled_params == table.total_params - faster.total_params
    text = str(table)
    assert f"{table.uncalled_params:,} of them" in text and "roi_heads.mask_head, roi_heads.mask_predictor" in text
    assert table.as_dict()["uncalled_layers"] == table.uncalled_layers


def test_gpt2_and_bert_on_int64_ids():
    small = {"vocab_size": 50, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2}
    table = summary(models.gpt2(**small), (8,))
    assert table.dtype == "int64"
    assert table.total_params == models.gpt2_parameter_count(50, 16, 16, 2)
    assert table.total_macs > 0 and table.uncalled_params == 0
    sizes = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2, "intermediate_size": 32,
             "max_position_embeddings": 16}
    table = summary(models.bert(num_attention_heads=2, **sizes), (8,))
    assert table.dtype == "int64"
    assert table.total_params == models.bert_parameter_count(**sizes)
    assert table.rows[-1]["output_shape"] != []


def test_imported_onnx_graph_is_one_row_with_its_parameters_and_macs(tmp_path):
    pytest.importorskip("onnx")
    from lamina.export import export_onnx, load_onnx

    model = nn.Sequential(nn.Conv2D(4, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(5))
    model(lamina.tensor(np.zeros((1, 10, 10, 2), np.float32)))
    imported = load_onnx(export_onnx(model, tmp_path / "m.onnx", input_shape=(10, 10, 2)))
    original = summary(model, (10, 10, 2))
    table = summary(imported)                         # the graph's declared input shape
    assert table.input_shape == (10, 10, 2)
    assert [r["type"] for r in table.rows] == ["OnnxModule"]
    assert table.total_params == imported.num_parameters() == original.total_params
    conv_and_dense = 8 * 8 * 4 * 9 * 2 + 5 * 64
    assert table.total_macs == conv_and_dense       # the pooling's compares are not multiply-adds
    assert table.rows[0]["output_shape"] == [5]


@pytest.mark.parametrize("layer, shape", [(lambda: nn.SpectralConv1D(4, 3), (16, 2)),
                                          (lambda: nn.SpectralConv2D(4, (3, 2)), (8, 8, 2))])
def test_spectral_convolutions(layer, shape):
    model = nn.Sequential(layer())
    table = summary(model, shape)
    model.build((None, *shape))
    assert table.total_params == model.num_parameters() > 0
    modes = 3 if len(shape) == 2 else 2 * 3 * 2      # 2-D keeps both ends of the first axis
    assert table.rows[0]["macs"] == 4 * modes * 2 * 4
    assert table.rows[0]["output_shape"] == [*shape[:-1], 4]


def test_rearrange_and_reduce_rows():
    model = nn.Sequential(nn.Rearrange("b h w c -> b (h w) c"), nn.Reduce("b n c -> b c", "max"), nn.Dense(3))
    table = summary(model, (4, 5, 2))
    assert [(r["type"], r["output_shape"], r["params"]) for r in table.rows] == [
        ("Rearrange", [20, 2], 0), ("Reduce", [2], 0), ("Dense", [3], 9)]
    assert table.total_params == 9 and table.total_macs == 6


def test_preprocessing_layers():
    table = summary(nn.Sequential(nn.Normalization(mean=[0.0, 1.0], variance=[1.0, 4.0]), nn.Dense(3)), (2,))
    assert [r["type"] for r in table.rows] == ["Normalization", "Dense"] and table.total_params == 9
    table = summary(nn.Sequential(nn.Discretization(bin_boundaries=[0.0, 1.0]), nn.CategoryEncoding(3)), (4,))
    assert [r["output_shape"] for r in table.rows] == [[4], [3]]
    table = summary(nn.Sequential(nn.Hashing(num_bins=5, output_mode="one_hot")), (1,))
    assert table.dtype == "str" and table.rows[0]["output_shape"] == [5]
    text = nn.TextVectorization(max_tokens=10, output_sequence_length=4)
    text.adapt(np.array(["a b c", "b c d"]))
    table = summary(nn.Sequential(text, nn.Embedding(10, 3)), (1,))
    assert [(r["type"], r["output_shape"]) for r in table.rows] == [("TextVectorization", [4]),
                                                                  ("Embedding", [4, 3])]
    assert table.total_params == 30
