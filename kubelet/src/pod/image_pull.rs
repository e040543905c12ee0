//! A container's image, as kubelet's image manager gets it: by pull policy, with the pod's
//! pull secrets, and with kubelet's events (Pulling, Pulled, Failed, ErrImageNeverPull,
//! FailedToRetrieveImagePullSecret).

use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

use super::model::Waiting;
use super::runtime_port::{error_chain, ImageInfo, PortError, PullPolicy};
use super::worker::WorkerContext;
use crate::events::{pod_reference, EventType};

/// The image to run, by pull policy (present: used unless Always; absent: pulled unless
/// Never), with the pod's pull secrets and kubelet's events. Errors come back as the
/// waiting reason kubelet would show.
pub(super) async fn ensure_image(
    ctx: &WorkerContext,
    pod: &Pod,
    container: &str,
    reference: &str,
    policy: PullPolicy,
) -> Result<ImageInfo, Waiting> {
    let object = pod_reference(pod, Some(container));
    let events = &ctx.events;
    if reference.is_empty() {
        return Err(Waiting {
            reason: "InvalidImageName".to_string(),
            message: "Failed to apply default image tag \"\": couldn't parse image name \"\": invalid reference format"
                .to_string(),
        });
    }
    let pull_error = |error: PortError| Waiting { reason: "ErrImagePull".to_string(), message: error_chain(&error) };
    if policy != PullPolicy::Always {
        if let Some(image) = ctx.runtime.local_image(reference).await.map_err(pull_error)? {
            let message = format!("Container image \"{reference}\" already present on machine");
            events.record(object, EventType::Normal, "Pulled", message);
            return Ok(image);
        }
        if policy == PullPolicy::Never {
            let message = format!("Container image \"{reference}\" is not present with pull policy of Never");
            events.record(object, EventType::Warning, "ErrImageNeverPull", message.clone());
            return Err(Waiting { reason: "ErrImageNeverPull".to_string(), message });
        }
    }
    let credentials = ctx.pull_secrets.for_pod(pod).await;
    if !credentials.problems.is_empty() {
        let message = format!(
            "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
            credentials.problems.join(", ")
        );
        events.record(object.clone(), EventType::Warning, "FailedToRetrieveImagePullSecret", message);
    }
    events.record(object.clone(), EventType::Normal, "Pulling", format!("Pulling image \"{reference}\""));
    let started = Instant::now();
    match ctx.runtime.pull_image(reference, &credentials.configs).await {
        Ok(image) => {
            let took = started.elapsed().as_secs_f64();
            let message = format!(
                "Successfully pulled image \"{reference}\" in {took:.3}s ({took:.3}s including waiting). Image size: {} bytes.",
                image.size
            );
            events.record(object, EventType::Normal, "Pulled", message);
            Ok(image)
        }
        Err(error) => {
            let waiting = pull_error(error);
            let message = format!("Failed to pull image \"{reference}\": {}", waiting.message);
            events.record(object.clone(), EventType::Warning, "Failed", message);
            events.record(object, EventType::Warning, "Failed", "Error: ErrImagePull");
            Err(waiting)
        }
    }
}
