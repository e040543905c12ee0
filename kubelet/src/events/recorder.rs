//! The handle pods and the node record events through, and the one task that sends them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::correlator::{Correlator, Decision};
use super::token_bucket::TokenBucket;
use super::{EventInput, EventType};

/// Events waiting to be sent; more are dropped (client-go's queue holds 1000 too).
const QUEUE: usize = 1000;
/// kubelet's `eventRecordQPS` and `eventBurst`: the API writes events may take, so that a
/// burst of pod starts does not crowd out status updates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventLimits {
    /// Writes per second; 0 is no limit, as kubelet reads it.
    pub qps: f64,
    pub burst: u32,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits { qps: 50.0, burst: 100 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventSinkError {
    #[error("event {namespace}/{name} no longer exists")]
    Gone { namespace: String, name: String },
    #[error("sending event {namespace}/{name}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Where events go.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    async fn create(&self, event: &Event) -> Result<(), EventSinkError>;
    /// Set the count and last timestamp of an event sent before.
    async fn update_count(
        &self,
        namespace: &str,
        name: &str,
        count: i32,
        last_timestamp: DateTime<Utc>,
    ) -> Result<(), EventSinkError>;
}

/// Events through the API (core/v1, as kubelet's recorder writes them).
pub struct ApiEventSink {
    client: kube::Client,
}

impl ApiEventSink {
    pub fn new(client: kube::Client) -> ApiEventSink {
        ApiEventSink { client }
    }
}

#[async_trait::async_trait]
impl EventSink for ApiEventSink {
    async fn create(&self, event: &Event) -> Result<(), EventSinkError> {
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let name = event.metadata.name.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), event).await {
            Ok(_) => Ok(()),
            Err(source) => Err(EventSinkError::Api { namespace, name, source }),
        }
    }

    async fn update_count(
        &self,
        namespace: &str,
        name: &str,
        count: i32,
        last_timestamp: DateTime<Utc>,
    ) -> Result<(), EventSinkError> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({"count": count, "lastTimestamp": last_timestamp.to_rfc3339()});
        match api.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(response)) if response.code == 404 => {
                Err(EventSinkError::Gone { namespace: namespace.to_string(), name: name.to_string() })
            }
            Err(source) => {
                Err(EventSinkError::Api { namespace: namespace.to_string(), name: name.to_string(), source })
            }
        }
    }
}

/// Records events without waiting; cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    queue: Option<mpsc::Sender<EventInput>>,
}

impl EventRecorder {
    /// Send events to `sink` from a task that runs until `shutdown`; `host` is the node name.
    pub fn start(sink: Arc<dyn EventSink>, host: &str, shutdown: CancellationToken) -> EventRecorder {
        EventRecorder::start_with(sink, host, EventLimits::default(), shutdown)
    }

    /// As [`EventRecorder::start`], writing at most as `limits` allow.
    pub fn start_with(
        sink: Arc<dyn EventSink>,
        host: &str,
        limits: EventLimits,
        shutdown: CancellationToken,
    ) -> EventRecorder {
        let (queue, inputs) = mpsc::channel(QUEUE);
        tokio::spawn(send_events(inputs, sink, Correlator::new(host), limits, shutdown));
        EventRecorder { queue: Some(queue) }
    }

    /// Events only logged (standalone mode: there is no API to send them to).
    pub fn log_only() -> EventRecorder {
        EventRecorder { queue: None }
    }

    pub fn record(&self, object: ObjectReference, event_type: EventType, reason: &str, message: impl Into<String>) {
        let input = EventInput { object, event_type, reason: reason.to_string(), message: message.into() };
        let (name, field) = (input.object.name.as_deref().unwrap_or_default(), input.object.field_path.as_deref());
        match &self.queue {
            None => {
                tracing::info!(object = name, field, kind = event_type.as_str(), reason, message = %input.message, "event")
            }
            Some(queue) => {
                tracing::debug!(object = name, field, kind = event_type.as_str(), reason, message = %input.message, "event");
                if queue.try_send(input).is_err() {
                    tracing::debug!(reason, "event dropped: the queue is full");
                }
            }
        }
    }
}

async fn send_events(
    mut inputs: mpsc::Receiver<EventInput>,
    sink: Arc<dyn EventSink>,
    mut correlator: Correlator,
    limits: EventLimits,
    shutdown: CancellationToken,
) {
    // `None`: no limit.
    let mut bucket = (limits.qps > 0.0).then(|| TokenBucket::new(f64::from(limits.burst.max(1)), limits.qps));
    let mut last = tokio::time::Instant::now();
    loop {
        let input = tokio::select! {
            _ = shutdown.cancelled() => return,
            input = inputs.recv() => match input {
                Some(input) => input,
                None => return,
            },
        };
        // Wait for a token (the queue keeps what comes meanwhile).
        if let Some(bucket) = bucket.as_mut() {
            let mut now = tokio::time::Instant::now();
            while let Err(wait) = bucket.take(now - last) {
                last = now;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                now = tokio::time::Instant::now();
            }
            last = now;
        }
        let result = match correlator.observe(&input, Utc::now()) {
            Decision::Drop => {
                tracing::debug!(reason = %input.reason, "event dropped: rate limited");
                continue;
            }
            Decision::Create(event) => sink.create(&event).await,
            Decision::Update { namespace, name, count, last_timestamp } => {
                match sink.update_count(&namespace, &name, count, last_timestamp).await {
                    // Expired on the server: send it as a new event.
                    Err(EventSinkError::Gone { namespace, name }) => {
                        correlator.forget(&namespace, &name);
                        match correlator.observe(&input, Utc::now()) {
                            Decision::Create(event) => sink.create(&event).await,
                            _ => Ok(()),
                        }
                    }
                    other => other,
                }
            }
        };
        if let Err(error) = result {
            tracing::debug!("event not sent: {}", nodelet_runtime::error_chain(&error));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct MemorySink {
        events: Mutex<Vec<Event>>,
        expire_next_update: Mutex<bool>,
    }

    #[async_trait::async_trait]
    impl EventSink for MemorySink {
        async fn create(&self, event: &Event) -> Result<(), EventSinkError> {
            self.events.lock().unwrap().push(event.clone());
            Ok(())
        }

        async fn update_count(
            &self,
            namespace: &str,
            name: &str,
            count: i32,
            last_timestamp: DateTime<Utc>,
        ) -> Result<(), EventSinkError> {
            if std::mem::take(&mut *self.expire_next_update.lock().unwrap()) {
                self.events.lock().unwrap().retain(|e| e.metadata.name.as_deref() != Some(name));
                return Err(EventSinkError::Gone { namespace: namespace.into(), name: name.into() });
            }
            let mut events = self.events.lock().unwrap();
            let event = events.iter_mut().find(|e| e.metadata.name.as_deref() == Some(name)).expect("sent before");
            event.count = Some(count);
            event.last_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(last_timestamp));
            Ok(())
        }
    }

    fn pod() -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            name: Some("web".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn repeats_become_counts_and_expired_events_are_sent_again() {
        let sink = Arc::new(MemorySink::default());
        let shutdown = CancellationToken::new();
        let recorder = EventRecorder::start(sink.clone(), "node-1", shutdown.clone());
        recorder.record(pod(), EventType::Warning, "BackOff", "Back-off restarting failed container");
        recorder.record(pod(), EventType::Warning, "BackOff", "Back-off restarting failed container");
        settle().await;
        {
            let events = sink.events.lock().unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].count, Some(2));
            assert_eq!(events[0].type_.as_deref(), Some("Warning"));
        }
        *sink.expire_next_update.lock().unwrap() = true;
        recorder.record(pod(), EventType::Warning, "BackOff", "Back-off restarting failed container");
        settle().await;
        let events = sink.events.lock().unwrap();
        assert_eq!(events.len(), 1, "the expired one was replaced");
        assert_eq!(events[0].count, Some(1));
        shutdown.cancel();
    }
}
