"""mtiasim: how would this PyTorch model run on an MTIA-class accelerator, or on a GPU?

>>> import mtiasim
>>> r = mtiasim.simulate("dlrm-v2", chip="mtia-200", batch=2048)   # doctest: +SKIP
>>> r.latency_s, r.energy_j, r.power_w, r.ops[0].bound              # doctest: +SKIP
>>> t = mtiasim.train("llama3.1-8b", system="h100-sxm-80gb:8", global_batch=64, seq_len=4096)  # doctest: +SKIP
>>> t.step_time_s, t.mfu, t.memory_per_chip_bytes, t.fits           # doctest: +SKIP
"""

__version__ = "0.1.0"

from mtiasim.api import simulate  # noqa: E402
from mtiasim.chips import list_chips, load_chip  # noqa: E402
from mtiasim.compile_backend import compiled_results, last_result  # noqa: E402
from mtiasim.frontend.capture import capture  # noqa: E402
from mtiasim.training import train  # noqa: E402

__all__ = ["__version__", "capture", "compiled_results", "last_result", "list_chips", "load_chip", "simulate", "train"]
