"""The JAX/Flax NNX backend. Importing it first adds the multi-GPU XLA flags (see
:func:`jax_impl.distributed.add_gpu_collective_flags`): XLA reads ``XLA_FLAGS`` once, when JAX
initializes its backend, so this is the last moment they can still apply."""
from jax_impl.distributed import add_gpu_collective_flags

XLA_FLAGS_ADDED = add_gpu_collective_flags()
