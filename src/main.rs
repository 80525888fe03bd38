//! The binary: everything lives in the library; this only hands over the arguments.

#![forbid(unsafe_code)]

fn main() {
    std::process::exit(llama_gguf_inference::cli::main(
        std::env::args_os().skip(1).collect(),
    ));
}
