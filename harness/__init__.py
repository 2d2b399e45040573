"""qharness: quantization-aware evaluation harness."""

import logging

__version__ = "0.1.0"

# torchao (which transformers imports whenever it is installed) logs every CUDA kernel it
# cannot load on a CPU machine, and torch warns about torchao's enum registrations:
# noise a user can do nothing about. Errors still show.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
