"""rnnexp: recurrent-network experiments with Hydra, Lightning and TensorBoard.

Nothing heavy is imported here on purpose: `rnnexp-train --help` must parse the
command line before torch or Lightning are loaded.
"""

__version__ = "0.1.0"
