"""``lamina summary``: the table of lenet5 and of every zoo model."""

import os
import subprocess
import sys

import pytest

from lamina import cli

ZOO = ["alexnet", "zfnet", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet", "inception_v3", "resnet18",
       "resnet34", "resnet50", "resnet101", "resnet152", "resnet_cifar20", "resnet_cifar32", "resnet_cifar56",
       "mobilenet"]


def test_lenet5_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "lamina", "summary", "--model", "lenet5"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr
    assert "Total params: 61,706" in result.stdout and "Total MACs" in result.stdout
    assert "(28, 28, 6)" in result.stdout


def test_options(capsys):
    s = cli.main(["summary", "--model", "lenet5", "--batch-size", "16", "--optimizer", "sgd"])
    out = capsys.readouterr().out
    assert s == 0 and "batch 16, sgd" in out
    cli.main(["summary", "--model", "lenet5", "--input-shape", "28,28,1", "--num-classes", "3", "--json"])
    out = capsys.readouterr().out
    assert '"input_shape": [\n    28,' in out or '"input_shape": [28, 28, 1]' in out
    assert '"output_shape": [\n        3\n      ]' in out or '"output_shape": [3]' in out


def test_unknown_model_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        cli.main(["summary", "--model", "nope"])


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model(name, capsys, builder):
    builder(name)
    cli.main(["summary", "--model", name])
    out = capsys.readouterr().out
    assert "Total params:" in out and "Total MACs" in out
    from lamina.analysis.compare import native_input_shape

    shape = native_input_shape(name)
    assert f"input ({', '.join(str(n) for n in shape)})" in out


def test_text_models_read_ids_of_a_vocabulary(capsys):
    import json

    cli.main(["summary", "--model", "rnn_language_model", "--json"])
    table = json.loads(capsys.readouterr().out)
    assert table["input_shape"] == [64] and table["dtype"] == "int64"
    assert table["rows"][0]["params"] == 65 * 32 and table["rows"][-1]["output_shape"] == [64, 65]
    cli.main(["summary", "--model", "transformer_language_model", "--num-classes", "30", "--input-shape", "16",
              "--json"])
    table = json.loads(capsys.readouterr().out)
    assert table["rows"][-1]["output_shape"] == [16, 30]
    cli.main(["summary", "--model", "rnn_classifier", "--num-classes", "3", "--json"])
    table = json.loads(capsys.readouterr().out)
    assert table["rows"][0]["params"] == 65 * 32 and table["rows"][-1]["output_shape"] == [3]
