"""``import lamina``, ``import lamina.train``, ``import lamina.rl`` and the command line leave the
large packages for first use, and nothing notices."""

import importlib
import subprocess
import sys

import pytest

import lamina
import lamina.train

FRESH_PROCESS_CHECKS = """
import sys
import lamina

later = ("analysis", "distributed", "distributions", "export", "linalg", "models", "rl", "special", "text", "vision")
loaded = [name for name in later if f"lamina.{name}" in sys.modules]
assert not loaded, f"import lamina loaded {loaded}"
assert "scipy" not in sys.modules, "import lamina loaded SciPy"
assert "models" in dir(lamina) and "export_onnx" in dir(lamina)

# the fit loop and its callbacks and metrics come without the zoo, analysis, text or vision
import lamina.train
heavy = ("lamina.analysis", "lamina.export", "lamina.models", "lamina.rl", "lamina.text", "lamina.vision",
         "scipy.stats")
loaded = [name for name in heavy if name in sys.modules]
assert not loaded, f"import lamina.train loaded {loaded}"

# the agents and the command line come without the zoo
import lamina.cli
import lamina.rl
assert "lamina.models" not in sys.modules, "import lamina.cli loaded the model zoo"
parser = lamina.cli.build_parser()               # what lamina --help builds: every command's parser
assert "lamina.models" not in sys.modules, "building the command line's parser loaded the model zoo"

# a saved architecture naming a zoo layer finds it before the zoo is imported, and so does one
# naming a layer of an agent that is itself loaded on first use
config = {"class_name": "BasicBlock", "config": {"filters": 4}}
block = lamina.nn.layer_from_config(config)
assert type(block).__module__ == "lamina.models.resnet", type(block).__module__
assert "lamina.models" in sys.modules
registered = lamina.nn.registered_layers()
assert registered["TemporalUNet"].__module__ == "lamina.rl.offline.temporal_unet"
assert registered["KerasSequential"].__module__ == "lamina.keras.models"     # a saved Keras-style model loads

# the names loaded on first use resolve
assert "DINOTrainer" in dir(lamina.train) and "dino" in dir(lamina.train)
from lamina.train import DINOTrainer
assert DINOTrainer.__module__ == "lamina.train.dino"
assert lamina.train.bayesian.__name__ == "lamina.train.bayesian"
assert "DecisionTransformer" in dir(lamina.rl) and "offline" in dir(lamina.rl)
from lamina.rl import DecisionTransformer
assert DecisionTransformer.__module__ == "lamina.rl.offline.decision_transformer"
assert lamina.rl.offline.__name__ == "lamina.rl.offline"

from lamina import text
assert text is lamina.text
assert callable(lamina.export_onnx) and lamina.export_onnx.__module__.startswith("lamina.export")
print("ok")
"""


def test_the_large_packages_load_on_first_use_in_a_fresh_process():
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS_CHECKS], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_an_unknown_attribute_names_itself():
    with pytest.raises(AttributeError, match="module 'lamina' has no attribute 'modles'"):
        lamina.modles  # noqa: B018
    with pytest.raises(AttributeError, match="module 'lamina.train' has no attribute 'Trainr'"):
        lamina.train.Trainr  # noqa: B018
    with pytest.raises(AttributeError, match="module 'lamina.rl' has no attribute 'DecisionTransformr'"):
        lamina.rl.DecisionTransformr  # noqa: B018


def test_the_registry_read_whole_holds_the_zoo_and_the_agents():
    from lamina.models.resnet import BasicBlock

    registered = lamina.nn.registered_layers()
    assert registered["BasicBlock"] is BasicBlock
    assert any(cls.__module__.startswith("lamina.rl.") for cls in registered.values())


def test_every_public_name_resolves():
    for name in lamina.__all__:
        assert getattr(lamina, name) is not None, name


@pytest.mark.parametrize("package", ["lamina.train", "lamina.rl"])
def test_every_name_of_the_package_resolves_from_its_own_module(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    for submodule, names in module._MODULES_ON_FIRST_USE.items():
        source = importlib.import_module(f"{package}.{submodule}")
        assert getattr(module, submodule) is source and submodule in dir(module)
        for name in names:
            assert getattr(module, name) is getattr(source, name), name
