//! Reading `<bundle>/config.json`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read runtime spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("runtime spec {path}: invalid field {field}")]
    Invalid {
        path: PathBuf,
        /// Where in the document, e.g. "process.args" ("." for the document itself).
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("runtime spec {path} has no process")]
    NoProcess { path: PathBuf },
    #[error("runtime spec {path} has an empty process.args")]
    NoArgs { path: PathBuf },
}

/// Load and sanity-check the bundle's config.json.
pub fn load_bundle(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| SpecError::Read { path: path.clone(), source })?;
    // Through serde_path_to_error so the error names the field, not only a line and column.
    let spec: Spec = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&text))
        .map_err(|e| SpecError::Invalid { path: path.clone(), field: e.path().to_string(), source: e.into_inner() })?;
    let process = spec.process().as_ref().ok_or_else(|| SpecError::NoProcess { path: path.clone() })?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(SpecError::NoArgs { path });
    }
    Ok(spec)
}
