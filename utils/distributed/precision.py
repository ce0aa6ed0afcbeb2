"""Mixed precision: which dtype autocast uses for the `trainer.amp` setting."""

from contextlib import AbstractContextManager

import torch

from utils.errors import UserError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str | bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` ("bf16", "fp16" or false) on `device`; None for fp32."""
    if amp is False:
        return None
    if device.type == "cuda" and amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"trainer.amp: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
            "valid here: 'fp16' or false"
        )
    return AMP_DTYPES[amp]


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Run the ops inside in `dtype` where autocast deems it safe; plain fp32 when None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
