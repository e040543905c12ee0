//! Node `status.images`, as kubelet reports them: the largest images first, at most
//! [`MAX_IMAGES`] (kubelet's `--node-status-max-images` default), each named by its repo
//! digests and tags (at most [`MAX_NAMES_PER_IMAGE`]).

use k8s_openapi::api::core::v1::ContainerImage;

pub const MAX_IMAGES: usize = 50;
/// kubelet's `maxNamesPerImageInNodeStatus`.
pub const MAX_NAMES_PER_IMAGE: usize = 5;

/// One image in the node's store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeImage {
    /// Repo digests first, then tags, as kubelet lists them.
    pub names: Vec<String>,
    pub size_bytes: u64,
}

/// What `status.images` should hold.
pub fn status_images(mut images: Vec<NodeImage>) -> Vec<ContainerImage> {
    images.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then_with(|| a.names.cmp(&b.names)));
    images
        .into_iter()
        .take(MAX_IMAGES)
        .map(|image| {
            let mut names: Vec<String> = Vec::new();
            for name in image.names {
                if !names.contains(&name) && names.len() < MAX_NAMES_PER_IMAGE {
                    names.push(name);
                }
            }
            ContainerImage { names: Some(names), size_bytes: i64::try_from(image.size_bytes).ok() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, size_bytes: u64) -> NodeImage {
        NodeImage { names: vec![format!("{name}@sha256:0"), format!("{name}:1"), format!("{name}:1")], size_bytes }
    }

    #[test]
    fn largest_first_capped_and_named_once() {
        assert!(status_images(Vec::new()).is_empty());
        let images: Vec<NodeImage> = (0..60).map(|i| image(&format!("r/i{i}"), i * 10)).collect();
        let listed = status_images(images);
        assert_eq!(listed.len(), MAX_IMAGES);
        assert_eq!(listed[0].size_bytes, Some(590));
        assert_eq!(listed[0].names.as_deref().unwrap(), ["r/i59@sha256:0", "r/i59:1"]);
        let many = NodeImage { names: (0..8).map(|i| format!("n{i}")).collect(), size_bytes: 1 };
        assert_eq!(status_images(vec![many])[0].names.as_ref().unwrap().len(), MAX_NAMES_PER_IMAGE);
    }
}
