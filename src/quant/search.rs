//! Shared scale-search helpers of ggml-quants.c (placeholder: being written).
