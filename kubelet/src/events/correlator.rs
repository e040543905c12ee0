//! What to do with an event, as client-go's `EventCorrelator` decides it: an event seen
//! before (same object, type, reason, message and source) becomes a count update of the one
//! sent; every object has a token bucket (a burst of 25, refilled one per 5 minutes) and an
//! event that finds it empty is dropped. Pure: the caller passes the time.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::token_bucket::TokenBucket;
use super::{EventInput, COMPONENT};

/// client-go's `defaultSpamBurst` and `defaultSpamQPS` (1/300).
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL: Duration = Duration::from_secs(300);
/// client-go's `maxLruCacheEntries`: how many distinct events are remembered for counting.
const MAX_REMEMBERED: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// A new event object.
    Create(Box<Event>),
    /// The event sent before, seen again: set its count and last timestamp.
    Update { namespace: String, name: String, count: i32, last_timestamp: DateTime<Utc> },
    /// Rate limited.
    Drop,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey {
    object: String,
    event_type: &'static str,
    reason: String,
    message: String,
}

struct Sent {
    namespace: String,
    name: String,
    count: i32,
}

struct Bucket {
    tokens: TokenBucket,
    at: DateTime<Utc>,
}

pub struct Correlator {
    host: String,
    sent: HashMap<EventKey, Sent>,
    /// Keys in the order they were first sent, to forget the oldest.
    order: VecDeque<EventKey>,
    buckets: HashMap<String, Bucket>,
}

impl Correlator {
    /// `host`: the node name, the events' `source.host`.
    pub fn new(host: impl Into<String>) -> Correlator {
        Correlator { host: host.into(), sent: HashMap::new(), order: VecDeque::new(), buckets: HashMap::new() }
    }

    pub fn observe(&mut self, input: &EventInput, now: DateTime<Utc>) -> Decision {
        let object = object_key(&input.object);
        if !self.take_token(&object, now) {
            return Decision::Drop;
        }
        let key = EventKey {
            object,
            event_type: input.event_type.as_str(),
            reason: input.reason.clone(),
            message: input.message.clone(),
        };
        if let Some(sent) = self.sent.get_mut(&key) {
            sent.count = sent.count.saturating_add(1);
            return Decision::Update {
                namespace: sent.namespace.clone(),
                name: sent.name.clone(),
                count: sent.count,
                last_timestamp: now,
            };
        }
        let event = self.new_event(input, now);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let name = event.metadata.name.clone().unwrap_or_default();
        if self.order.len() >= MAX_REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.sent.remove(&oldest);
            }
        }
        self.order.push_back(key.clone());
        self.sent.insert(key, Sent { namespace, name, count: 1 });
        Decision::Create(Box::new(event))
    }

    /// The event sent for this input is gone from the API (expired): the next one creates anew.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.sent.retain(|_, sent| !(sent.namespace == namespace && sent.name == name));
    }

    fn take_token(&mut self, object: &str, now: DateTime<Utc>) -> bool {
        let fresh = Bucket { tokens: TokenBucket::new(SPAM_BURST, 1.0 / SPAM_REFILL.as_secs_f64()), at: now };
        let bucket = self.buckets.entry(object.to_string()).or_insert(fresh);
        let elapsed = (now - bucket.at).to_std().unwrap_or_default();
        bucket.at = now;
        bucket.tokens.take(elapsed).is_ok()
    }

    fn new_event(&self, input: &EventInput, now: DateTime<Utc>) -> Event {
        let object = &input.object;
        let namespace = object.namespace.clone().filter(|ns| !ns.is_empty()).unwrap_or_else(|| "default".to_string());
        let nanos = now.timestamp_nanos_opt().unwrap_or_default();
        Event {
            metadata: ObjectMeta {
                // client-go's name: the object's name and the time in hex nanoseconds.
                name: Some(format!("{}.{nanos:x}", object.name.as_deref().unwrap_or("unknown"))),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: object.clone(),
            reason: Some(input.reason.clone()),
            message: Some(input.message.clone()),
            type_: Some(input.event_type.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource { component: Some(COMPONENT.to_string()), host: Some(self.host.clone()) }),
            reporting_component: Some(COMPONENT.to_string()),
            reporting_instance: Some(self.host.clone()),
            ..Event::default()
        }
    }
}

fn object_key(object: &ObjectReference) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        object.kind.as_deref().unwrap_or_default(),
        object.namespace.as_deref().unwrap_or_default(),
        object.name.as_deref().unwrap_or_default(),
        object.uid.as_deref().unwrap_or_default(),
        object.field_path.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::events::EventType;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).single().expect("time")
    }

    fn input(name: &str, reason: &str, message: &str) -> EventInput {
        EventInput {
            object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectReference::default()
            },
            event_type: EventType::Normal,
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_repeat_counts_instead_of_creating() {
        let mut correlator = Correlator::new("node-1");
        let Decision::Create(event) = correlator.observe(&input("web", "Pulled", "pulled"), at(0)) else {
            panic!("first is created");
        };
        assert_eq!(event.source.as_ref().and_then(|s| s.host.as_deref()), Some("node-1"));
        assert_eq!(event.metadata.namespace.as_deref(), Some("ns"));
        assert!(event.metadata.name.as_deref().unwrap().starts_with("web."));
        let name = event.metadata.name.clone().unwrap();
        assert_eq!(
            correlator.observe(&input("web", "Pulled", "pulled"), at(5)),
            Decision::Update { namespace: "ns".into(), name: name.clone(), count: 2, last_timestamp: at(5) }
        );
        // Another message is another event.
        assert!(matches!(correlator.observe(&input("web", "Pulled", "other"), at(6)), Decision::Create(_)));
        correlator.forget("ns", &name);
        assert!(matches!(correlator.observe(&input("web", "Pulled", "pulled"), at(7)), Decision::Create(_)));
    }

    #[test]
    fn a_noisy_object_is_limited_to_a_burst_then_one_per_five_minutes() {
        let mut correlator = Correlator::new("n");
        let sent = (0..40)
            .filter(|i| correlator.observe(&input("noisy", "BackOff", &format!("m{i}")), at(0)) != Decision::Drop)
            .count();
        assert_eq!(sent, 25);
        assert_eq!(correlator.observe(&input("noisy", "BackOff", "x"), at(100)), Decision::Drop);
        assert_ne!(correlator.observe(&input("noisy", "BackOff", "y"), at(300)), Decision::Drop, "refilled one");
        // Other objects have their own bucket.
        assert_ne!(correlator.observe(&input("quiet", "Pulled", "z"), at(300)), Decision::Drop);
    }
}
