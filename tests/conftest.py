import os
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

if sys.dont_write_bytecode:
    # Without cached bytecode every run compiles lamina again and, in each worker, rewrites the
    # asserts of 1,100 test modules (about 20 s of a worker's time). Where bytecode is switched
    # off (PYTHONDONTWRITEBYTECODE), the suite keeps its own under the temporary directory, so the
    # source tree stays free of it.
    sys.pycache_prefix = os.path.join(tempfile.gettempdir(), f"lamina-tests-bytecode-{os.getuid()}")
    sys.dont_write_bytecode = False

import lamina  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each worker process has a core of its own: more threads per worker would only fight
    # over the cores (OpenBLAS's spinning threads make small products many times slower).
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    lamina.parallel.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same seed and the default dtype."""
    lamina.manual_seed(0)
    lamina.set_default_dtype(np.float32)
    yield
    lamina.set_default_dtype(np.float32)


@pytest.fixture
def two_threads():
    """lamina's thread pool at two threads for the test, then back to its count."""
    before = lamina.parallel.get_num_threads()
    lamina.parallel.set_num_threads(2)
    yield
    lamina.parallel.set_num_threads(before)


@pytest.fixture
def float64():
    """float64 as the default dtype for the test (gradient checks, float64 torch rewrites);
    ``_seeded`` restores float32 after it."""
    lamina.set_default_dtype(np.float64)
    yield
