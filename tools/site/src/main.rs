//! Turns the wasm `cargo build` made for the browser into the files `/pkg` serves.
//!
//! Usage: `flowdeck-site INPUT.wasm PKG_DIR NAME`
//!
//! 1. Splits every `#[island(lazy)]` into a chunk of its own (`PKG_DIR/*.wasm`), with the
//!    loader module and the manifest Leptos reads to preload a page's chunks
//!    (`__wasm_split_manifest.json`).
//! 2. Generates the JavaScript glue of the main module with wasm-bindgen (`NAME.js`) and
//!    writes the main module as `NAME.wasm`, the name Leptos's hydration script loads.
//!
//! It prints the wasm files it wrote, one a line, for `wasm-opt` to shrink. This is what
//! `cargo leptos build --release --split` does between cargo and wasm-opt, with the same
//! two crates, without building cargo-leptos itself (about 20 minutes on 2 cores).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};

/// The loader module the split main module imports its chunks through; Leptos's
/// hydration script names it the same way.
const LINK_NAME: &str = "./__wasm_split.______________________.js";
const MANIFEST: &str = "__wasm_split_manifest.json";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, pkg_dir, name] = args.as_slice() else {
        bail!("usage: flowdeck-site INPUT.wasm PKG_DIR NAME");
    };
    for wasm in build(Path::new(input), Path::new(pkg_dir), name)? {
        println!("{}", wasm.display());
    }
    Ok(())
}

/// Splits and binds `input` into `pkg_dir`; returns the wasm files written there.
fn build(input: &Path, pkg_dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(pkg_dir).with_context(|| format!("creating {}", pkg_dir.display()))?;
    let wasm = fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    // The split main module still needs wasm-bindgen: it stays beside the input.
    let unbound = input.with_file_name(format!("{name}_split.wasm"));
    let main_module = format!("./{name}.js");

    let split = wasm_split_cli_support::transform({
        let mut options = wasm_split_cli_support::Options::new(&wasm);
        options.output_dir = pkg_dir;
        options.main_out_path = &unbound;
        options.main_module = &main_module;
        options.link_name = LINK_NAME;
        options
    })
    // eyre's report is not a std error; keep its whole chain in the message.
    .map_err(|e| anyhow!("splitting {}: {e:?}", input.display()))?;
    let manifest = serde_json::to_string_pretty(&split.prefetch_map)?;
    fs::write(pkg_dir.join(MANIFEST), manifest)?;

    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&unbound)
        .web(true)?
        // The chunks call the main module through the linker's exports, by their names.
        .keep_lld_exports(true)
        .demangle(false)
        .out_name(name)
        .generate(pkg_dir)
        .with_context(|| format!("wasm-bindgen on {}", unbound.display()))?;
    let main = pkg_dir.join(format!("{name}.wasm"));
    fs::rename(pkg_dir.join(format!("{name}_bg.wasm")), &main)?;

    let mut written = vec![main];
    written.extend(split.split_modules);
    Ok(written)
}
