"""SecAgg+ quantisation bounds shared by the server and the clients.

SecAgg+ quantises each client's float vector to integers (stochastic rounding, at most one step
Δ = 2R/Q per coordinate), so a contribution clipped to norm c can grow by up to √d·Δ. Clients
therefore clip to C − √d·Δ; the client checks the norm the server asks for against that bound
(computed from its own job's C and the d values it is about to send), not against C.
"""

from __future__ import annotations

import math

from privacy_finetuner.errors import ConfigError

__all__ = ["SECAGG_CLIPPING_RANGE", "SECAGG_QUANTIZATION_RANGE", "secagg_client_clip"]

#: SecAgg+ quantisation: values in [−R, R] become integers in [0, Q); Flower's defaults.
SECAGG_CLIPPING_RANGE = 8.0
SECAGG_QUANTIZATION_RANGE = 2**22


def secagg_client_clip(clipping_norm: float, num_parameters: int) -> float:
    """The norm clients clip to under SecAgg+, so that after quantisation a contribution is still
    within ``clipping_norm`` (each coordinate moves by less than Δ = 2R/Q).

    Raises:
        ConfigError: C is too small for the quantisation grid.
    """
    step = 2 * SECAGG_CLIPPING_RANGE / SECAGG_QUANTIZATION_RANGE
    reduced = clipping_norm - math.sqrt(num_parameters) * step
    if reduced <= 0.5 * clipping_norm:
        raise ConfigError(
            f"federated.clipping_norm {clipping_norm:g} is too small for SecAgg+ quantisation of "
            f"{num_parameters} parameters; raise it or train fewer parameters"
        )
    return reduced
