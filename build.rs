//! With the `python` feature (the default): links pyrs against the libpython
//! it was configured with and records that library's directory as an rpath, so
//! the binary never needs LD_LIBRARY_PATH and never silently loads a different
//! libpython of the same version. Without it (`--no-default-features`: the
//! HTTP core alone) nothing here runs and no Python is needed to build.
fn main() {
    // Rerun only when this file changes (or, with Python, PYO3_PYTHON), not on every source edit.
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "python")]
    python();
}

#[cfg(feature = "python")]
fn python() {
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::add_libpython_rpath_link_args();
    // Let the binary report which interpreter it was built against.
    let cfg = pyo3_build_config::get();
    if let Some(exe) = cfg.executable() {
        println!("cargo:rustc-env=PYRS_BUILD_PYTHON={exe}");
    } else {
        println!("cargo:rustc-env=PYRS_BUILD_PYTHON=python3");
    }
    // A virtualenv of another Python version is refused (its packages would not import).
    println!("cargo:rustc-env=PYRS_BUILD_PYTHON_VERSION={}.{}", cfg.version().major, cfg.version().minor);
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
