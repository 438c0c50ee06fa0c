"""ModelPool: a Kubernetes operator for big-and-small model serving on Triton."""

__version__ = "0.1.0"
