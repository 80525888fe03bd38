# Build base for image/Dockerfile.cuda: the CUDA toolkit (nvcc, static cudart/cuBLAS)
# plus what the CPU build base has (cmake, clang/libclang for bindgen, Rust 1.95.0).
# Needs a container registry and the Rust installer; built by `image/build cuda`.
FROM nvidia/cuda:12.8.1-devel-ubuntu24.04
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl gcc g++ make cmake clang libclang-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --default-toolchain 1.95.0 --no-modify-path
