"""What a GPU kernel does, guessed from its name: its class, and whether it uses tensor cores.

Kernel names are all a trace says about a kernel, and library authors encode a lot in them:
cuBLAS/cuDNN ``sm90_xmma_gemm_bf16bf16_...``, CUTLASS ``cutlass_80_tensorop_s1688gemm_...`` or
``..._simt_sgemm_...``, PyTorch's ``at::native::vectorized_elementwise_kernel<...>``, NCCL's
``ncclDevKernel_AllReduce...``. The rules below are ordered: the first class whose pattern matches
wins, so specific patterns (communication, attention, convolution) come before generic ones
(gemm, elementwise). Everything is case-insensitive.
"""

from __future__ import annotations

import re

__all__ = ["KERNEL_CLASSES", "classify_kernel", "is_communication", "kernel_class", "tensor_core"]

KERNEL_CLASSES = (
    "gemm",
    "convolution",
    "attention",
    "elementwise",
    "reduction",
    "normalization",
    "communication",
    "copy",
    "other",
)

_COMMUNICATION = re.compile(
    r"nccl|rccl|cross_device_reduce|all_?reduce|all_?gather|reduce_?scatter"
)
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("communication", _COMMUNICATION),
    ("attention", re.compile(r"flash|fmha|attention|attn|sdpa|_mha_|mha_fwd|mha_bwd")),
    (
        "convolution",
        # "conv" but not "convert"; cuDNN's fprop/dgrad/wgrad implicit GEMMs; MIOpen's igemm.
        re.compile(r"conv(?!ert)|fprop|dgrad|wgrad|winograd|implicit_?gemm|igemm_|[sh]cudnn"),
    ),
    (
        "gemm",
        # fbgemm is an embedding library, not a GEMM; Cijk_ names are AMD Tensile GEMMs.
        re.compile(
            r"(?<!fb)gemm|gemv|cublas|nvjet|matmul|splitkreduce|cutlass|triton_tem|bmm|xdlops"
            r"|^cijk_"
        ),
    ),
    (
        "normalization",
        re.compile(
            r"batch_?norm|layer_?norm|group_?norm|instance_?norm|rms_?norm|bn_fw|bn_bw"
            r"|gammabeta|welford"
        ),
    ),
    (
        "reduction",
        re.compile(r"reduce|softmax|argmax|argmin|nll_loss|cross_entropy|triton_red|triton_per"),
    ),
    (
        "copy",
        re.compile(r"copy|memcpy|transpose|nchwtonhwc|nhwctonchw|addpadding|permute|cat_?array"),
    ),
    (
        "elementwise",
        re.compile(
            r"elementwise|pointwise|multi_tensor_apply|triton_poi|fill|dropout|relu|gelu|silu"
            r"|sigmoid|tanh|activation|threshold|clamp|masked_scale|index"
        ),
    ),
)

# Tensor-core evidence, checked after the CUDA-core evidence below so that e.g.
# "sm80_xmma_gemm_f32f32_f32f32_f32_..._ffma" (xmma framework, but FFMA math) reads as False.
_CUDA_CORE = re.compile(
    r"sgemm|dgemm|simt|ffma|f32f32_f32f32|gemv|scudnn|opclasssimt|fmha_cutlass[fb]_f32"
)
_TENSOR_CORE = re.compile(
    r"tensorop|xmma|hmma|imma|wgmma|gmma|s16816|s1688|h884|h1688|h16816|i8816|tf32|tfloat32"
    r"|bf16|bfloat16|f16|fp16|half|e4m3|e5m2|fp8|nvjet|flash|xdl|mfma|hcudnn|_mi\d+x\d+"
)
_TENSOR_CORE_CLASSES = frozenset({"gemm", "convolution", "attention"})


def kernel_class(name: str) -> str:
    """One of :data:`KERNEL_CLASSES` for a kernel ``name`` ("other" when nothing matches)."""
    lowered = name.lower()
    for cls, pattern in _RULES:
        if pattern.search(lowered):
            return cls
    return "other"


def is_communication(name: str) -> bool:
    """True for collective-communication kernels (NCCL / RCCL and the like)."""
    return _COMMUNICATION.search(name.lower()) is not None


def tensor_core(name: str, cls: str | None = None) -> bool | None:
    """Whether a matrix kernel runs on tensor cores, as far as its name tells.

    ``None`` for classes where the question does not apply (elementwise, copy ...) and for
    matrix kernels whose name carries no evidence either way (e.g. Triton templates).
    """
    if cls is None:
        cls = kernel_class(name)
    if cls not in _TENSOR_CORE_CLASSES:
        return None
    lowered = name.lower()
    if "tf32" in lowered or "tfloat32" in lowered:
        return True  # TF32 runs on tensor cores even though the data is fp32
    if _CUDA_CORE.search(lowered):
        return False
    if _TENSOR_CORE.search(lowered):
        return True
    return None


def classify_kernel(name: str) -> tuple[str, bool | None]:
    """``(kernel_class, tensor_core)`` for a kernel name."""
    cls = kernel_class(name)
    return cls, tensor_core(name, cls)
