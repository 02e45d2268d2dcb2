//! Compiles the `.proto` files with `protox` (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/shoal/v1/piece.proto",
        "proto/shoal/v1/discovery.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Piece data as `bytes::Bytes`: decoding slices the received buffer instead of
        // copying every chunk into a fresh `Vec`.
        .bytes(".shoal.v1.UploadRequest.chunk")
        .bytes(".shoal.v1.DownloadResponse.data")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
