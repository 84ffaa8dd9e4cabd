"""dpcourse: the helper library of a hands-on course on data-parallel training with PyTorch."""

from dpcourse.env import doctor
from dpcourse.grading import check
from dpcourse.launch import LaunchError, LaunchTimeout, WorkerError, device, launch, rank, world_size
from dpcourse.network import Link, links

__version__ = "0.1.0"
__all__ = ["launch", "Link", "links", "doctor", "check", "rank", "world_size", "device", "LaunchError", "LaunchTimeout",
           "WorkerError"]
