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
