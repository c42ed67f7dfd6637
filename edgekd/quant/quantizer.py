"""The one place edgekd names torchao's quantizer.

XNNPACKQuantizer lives under a private torchao path (`torchao.testing.pt2e`) that warns it is
deprecated; torchao is pinned exactly in constraints.txt and nothing else imports it.
"""

from __future__ import annotations

import warnings


def qat_quantizer():
    """XNNPACK-style int8: symmetric, per-channel weights, with fake-quant for training."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.testing.pt2e._xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

    return XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_qat=True, is_per_channel=True))
