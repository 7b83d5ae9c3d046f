import os

import pytest
from hypothesis import settings

# Property tests: a fixed, modest number of examples keeps the suite fast and
# reproducible in CI; raise it locally with HYPOTHESIS_PROFILE=thorough.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _single_thread_torch():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_USER_STORE = os.environ.get("LOSSFORGE_STORE")


def pytest_configure(config):
    """Searches save their best losses to the loss store (default ~/.lossforge/losses),
    and ``names()`` lists the stored ones.  Point LOSSFORGE_STORE at an empty
    temporary directory from before collection (tests parametrised over
    ``names()`` are collected then) to the end: tests never read or write the
    user's store.  Tests that need a store of their own set it themselves."""
    import tempfile

    config._lossforge_store = tempfile.TemporaryDirectory(prefix="lossforge-test-store-")
    os.environ["LOSSFORGE_STORE"] = config._lossforge_store.name


def pytest_unconfigure(config):
    store = getattr(config, "_lossforge_store", None)
    if store is not None:
        store.cleanup()
    if _USER_STORE is None:
        os.environ.pop("LOSSFORGE_STORE", None)
    else:
        os.environ["LOSSFORGE_STORE"] = _USER_STORE
