//! Reading `<bundle>/config.json`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot load runtime spec {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("runtime spec {path} has no process")]
    NoProcess { path: PathBuf },
    #[error("runtime spec {path} has an empty process.args")]
    NoArgs { path: PathBuf },
}

/// Load and sanity-check the bundle's config.json.
pub fn load_bundle(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let spec = Spec::load(&path).map_err(|source| SpecError::Load { path: path.clone(), source })?;
    let process = spec.process().as_ref().ok_or_else(|| SpecError::NoProcess { path: path.clone() })?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(SpecError::NoArgs { path });
    }
    Ok(spec)
}
