"""What a GPU kernel does, guessed from its name: its class, whether it uses tensor cores, layout.

Kernel names are all a trace says about a kernel, and library authors encode a lot in them:
cuBLAS/cuDNN ``sm90_xmma_gemm_bf16bf16_...``, CUTLASS ``cutlass_80_tensorop_s1688gemm_...`` or
``..._simt_sgemm_...``, cuBLASLt on Hopper ``nvjet_sm90_tst_..._h_...``, PyTorch's
``at::native::vectorized_elementwise_kernel<...>``, NCCL's ``ncclDevKernel_AllReduce...``, AMD's
Tensile ``Cijk_..._MI16x16x1`` and MIOpen ``igemm_fwd_gtcx3_nhwc_bf16...``.

Both questions are answered by ordered tables of (answer, pattern) rows: the first row whose
pattern matches the lower-cased name wins, so specific rows come before generic ones. Adding a
library is adding a row; :func:`classify_kernel` caches nothing itself (the caller classifies
each distinct name once).
"""

from __future__ import annotations

import re

__all__ = [
    "CLASS_RULES",
    "KERNEL_CLASSES",
    "TENSOR_CORE_CLASSES",
    "TENSOR_CORE_RULES",
    "classify_kernel",
    "conv_layout",
    "is_communication",
    "is_layout_transform",
    "is_triton",
    "kernel_class",
    "tensor_core",
]

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
# The classes whose math can run on tensor cores (matrix cores on AMD).
TENSOR_CORE_CLASSES = frozenset({"gemm", "convolution", "attention"})

_COMMUNICATION = (
    r"nccl|rccl|msccl|cross_device_reduce|all_?reduce|all_?gather|reduce_?scatter|all_?to_?all"
    r"|sendrecv"
)

# (class, pattern): the first match wins. Communication first (NCCL kernel names mention
# "reduce"), then attention (flash kernels mention "gemm"), convolution (implicit GEMMs), gemm.
CLASS_RULES: tuple[tuple[str, str], ...] = (
    ("communication", _COMMUNICATION),
    ("attention", r"flash|fmha|attention|attn|sdpa|_mha_|mha_fwd|mha_bwd"),
    # "conv" but not "convert"; cuDNN's fprop/dgrad/wgrad implicit GEMMs; volta_scudnn_*,
    # volta_fp16_s884cudnn_*; MIOpen's igemm_* kernels.
    ("convolution", r"conv(?!ert)|fprop|dgrad|wgrad|winograd|implicit_?gemm|igemm_|[sh]\d*cudnn"),
    # fbgemm is an embedding library, not a GEMM; Cijk_ names are AMD Tensile GEMMs.
    (
        "gemm",
        r"(?<!fb)gemm|gemv|cublas|nvjet|matmul|splitkreduce|cutlass|triton_tem|bmm|xdlops|^cijk_"
        r"|magma_",
    ),
    (
        "normalization",
        r"batch_?norm|layer_?norm|group_?norm|instance_?norm|rms_?norm|bn_fw|bn_bw|gammabeta"
        r"|welford",
    ),
    ("reduction", r"reduce|softmax|argmax|argmin|nll_loss|cross_entropy|triton_red|triton_per"),
    (
        "copy",
        r"copy|memcpy|transpose|nchwtonhwc|nhwctonchw|addpadding|permute|cat_?array",
    ),
    (
        "elementwise",
        r"elementwise|pointwise|multi_tensor_apply|triton_poi|fill|dropout|relu|gelu|silu|sigmoid"
        r"|tanh|activation|threshold|clamp|masked_scale|index",
    ),
)

# (uses tensor cores, pattern) for matrix kernels: the first match wins; no match means the
# name does not say (None). CUDA-core evidence precedes tensor-core evidence so that e.g.
# "sm80_xmma_gemm_f32f32_f32f32_f32_..._ffma" (xmma framework, FFMA math) reads as False.
TENSOR_CORE_RULES: tuple[tuple[bool, str], ...] = (
    # TF32 (and MI300's xf32) run on tensor cores although the data is fp32.
    (True, r"tf32|tfloat32|xf32"),
    # FP64 tensor cores (A100 and later) are named DMMA.
    (True, r"dmma"),
    # CUDA cores: SIMT / FFMA GEMMs, cuBLAS gemv and small-N kernels, cuDNN's classic engines,
    # fp32 memory-efficient attention, Tensile kernels without a matrix instruction (no _MI).
    (
        False,
        r"sgemm|dgemm|simt|ffma|f32f32_f32f32|gemv|gemmsn_|gemmk1_|scudnn|opclasssimt"
        r"|dgrad_engine|wgrad_alg\d|winograd_nonfused|convolve_sgemm|fmha_cutlass[fb]_f32"
        r"|^cijk_(?!.*_mi\d)",
    ),
    # Tensor cores: MMA instruction families (Volta h884 .. Blackwell tcgen05/UMMA), library
    # tensor-op kernels, cuBLASLt nvjet, half/bfloat16/fp8 kernels, flash attention, AMD
    # MFMA/XDL matrix cores.
    (
        True,
        r"tensorop|xmma|hmma|imma|wgmma|gmma|tcgen05|umma|h884|h1688|h16816|s884|s1688|s16816"
        r"|s161616|i8816|nvjet|bf16|bfloat16|f16|fp16|half|e4m3|e5m2|fp8|flash|xdl|mfma|hcudnn"
        r"|_mi\d+x\d+|cutlass3x_sm\d+",
    ),
)

_CLASS_PATTERNS = tuple((cls, re.compile(p)) for cls, p in CLASS_RULES)
_TC_PATTERNS = tuple((verdict, re.compile(p)) for verdict, p in TENSOR_CORE_RULES)
_COMMUNICATION_RE = re.compile(_COMMUNICATION)
# cuDNN / CUTLASS / MIOpen spell the activation layout in the name; the first one named is the
# input's (e.g. "nhwckrsc_nchw": NHWC input and filter, NCHW output).
_LAYOUT = re.compile(r"nhwc|nchw")
# Conservative on purpose: only kernels whose name says they convert between the two layouts.
_LAYOUT_TRANSFORM = re.compile(r"nchwtonhwc|nhwctonchw|nchw2nhwc|nhwc2nchw")


def kernel_class(name: str) -> str:
    """One of :data:`KERNEL_CLASSES` for a kernel ``name`` ("other" when nothing matches)."""
    lowered = name.lower()
    for cls, pattern in _CLASS_PATTERNS:
        if pattern.search(lowered):
            return cls
    return "other"


def is_communication(name: str) -> bool:
    """True for collective-communication kernels (NCCL / RCCL and the like)."""
    return _COMMUNICATION_RE.search(name.lower()) is not None


def tensor_core(name: str, cls: str | None = None) -> bool | None:
    """Whether a matrix kernel runs on tensor cores, as far as its name tells.

    ``None`` for classes where the question does not apply (elementwise, copy ...) and for
    matrix kernels whose name carries no evidence either way (e.g. Triton templates, whose
    precision the launching operator's dtype decides).
    """
    if cls is None:
        cls = kernel_class(name)
    if cls not in TENSOR_CORE_CLASSES:
        return None
    lowered = name.lower()
    for verdict, pattern in _TC_PATTERNS:
        if pattern.search(lowered):
            return verdict
    return None


def classify_kernel(name: str) -> tuple[str, bool | None]:
    """``(kernel_class, tensor_core)`` for a kernel name."""
    cls = kernel_class(name)
    return cls, tensor_core(name, cls)


def conv_layout(name: str) -> str | None:
    """``"nhwc"`` / ``"nchw"``: the activation layout a convolution kernel's name states, if any.

    Many fp32 kernels (``implicit_convolve_sgemm``, ``volta_scudnn_*``) state none: ``None``.
    """
    found = _LAYOUT.search(name.lower())
    return found.group(0) if found else None


def is_layout_transform(name: str) -> bool:
    """True for kernels that only convert tensors between NCHW and NHWC (``nchwToNhwcKernel``)."""
    return _LAYOUT_TRANSFORM.search(name.lower()) is not None


def is_triton(name: str) -> bool:
    """True for Triton (torch.compile / Inductor) kernels, named ``triton_<kind>_fused_...``."""
    return name.startswith("triton_")
