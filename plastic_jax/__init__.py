"""plastic_jax: meta-learning biologically plausible plasticity rules in JAX.

The pure core: ``network`` (init, forward), ``feedback`` (teaching signals), ``plasticity``
(the ten terms, named rules), ``inner`` (online adaptation), ``meta`` (meta-loss, meta-step).
The driver: ``train`` (meta-training loop, I/O) and ``cli``.
"""

__version__ = "0.1.0"
