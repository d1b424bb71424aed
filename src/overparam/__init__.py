"""overparam: linear layers re-parameterized as U·S·Vᵀ, and the experiments that test them."""

__version__ = "0.1.0"
