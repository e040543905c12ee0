//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `exists`, `!key`, `>`, `<`) and field
//! selectors (`=`, `==`, `!=` over the field labels a resource supports).

use serde_json::Value;

use super::errors::ApiError;
use super::resources::ResourceType;

#[derive(Debug, Clone, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector; all requirements must hold (AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

/// Split on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

fn parse_set(text: &str, selector: &str) -> Result<Vec<String>, ApiError> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| invalid_label_selector(selector, "expected a set in parentheses"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn invalid_label_selector(selector: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: invalid label selector {selector:?}: {why}"))
}

fn valid_label_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl LabelSelector {
    pub fn parse(selector: &str) -> Result<LabelSelector, ApiError> {
        let mut requirements = Vec::new();
        for term in split_top_level(selector) {
            let requirement = if let Some(key) = term.strip_prefix('!') {
                LabelRequirement::DoesNotExist(key.trim().to_string())
            } else if let Some((key, set)) = term.split_once(" notin ") {
                LabelRequirement::NotIn(key.trim().to_string(), parse_set(set, selector)?)
            } else if let Some((key, set)) = term.split_once(" in ") {
                LabelRequirement::In(key.trim().to_string(), parse_set(set, selector)?)
            } else if let Some((key, value)) = term.split_once("!=") {
                LabelRequirement::NotEquals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, value)) = term.split_once("==") {
                LabelRequirement::Equals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, value)) = term.split_once('=') {
                LabelRequirement::Equals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, value)) = term.split_once('>') {
                let number =
                    value.trim().parse().map_err(|_| invalid_label_selector(selector, "gt needs an integer"))?;
                LabelRequirement::GreaterThan(key.trim().to_string(), number)
            } else if let Some((key, value)) = term.split_once('<') {
                let number =
                    value.trim().parse().map_err(|_| invalid_label_selector(selector, "lt needs an integer"))?;
                LabelRequirement::LessThan(key.trim().to_string(), number)
            } else {
                LabelRequirement::Exists(term.trim().to_string())
            };
            let key = match &requirement {
                LabelRequirement::Equals(k, _)
                | LabelRequirement::NotEquals(k, _)
                | LabelRequirement::In(k, _)
                | LabelRequirement::NotIn(k, _)
                | LabelRequirement::Exists(k)
                | LabelRequirement::DoesNotExist(k)
                | LabelRequirement::GreaterThan(k, _)
                | LabelRequirement::LessThan(k, _) => k,
            };
            if !valid_label_key(key) {
                return Err(invalid_label_selector(selector, "invalid label key"));
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether an object (its metadata.labels) matches.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, set) => label(k).is_some_and(|l| set.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, set) => !label(k).is_some_and(|l| set.iter().any(|v| v == l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
            LabelRequirement::GreaterThan(k, n) => label(k).and_then(|l| l.parse::<i64>().ok()).is_some_and(|l| l > *n),
            LabelRequirement::LessThan(k, n) => label(k).and_then(|l| l.parse::<i64>().ok()).is_some_and(|l| l < *n),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct FieldRequirement {
    field: String,
    value: String,
    negated: bool,
}

/// A parsed field selector; all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// The string form of a field label of an object, as the API server's field-label functions
/// compute it (missing strings are "", booleans are "true"/"false").
fn field_value(object: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Object(o)) if field == "source" => {
            o.get("component").and_then(Value::as_str).unwrap_or_default().to_string()
        }
        None if field == "spec.hostNetwork" || field == "spec.unschedulable" => "false".into(),
        _ => String::new(),
    }
}

impl FieldSelector {
    /// Parse and check every field label against what `resource` supports.
    pub fn parse(selector: &str, resource: &ResourceType) -> Result<FieldSelector, ApiError> {
        let mut requirements = Vec::new();
        for term in split_top_level(selector) {
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector {selector:?}: {term:?} is not a valid field selector term"
                )));
            };
            let field = field.trim();
            let supported = field == "metadata.name"
                || (field == "metadata.namespace" && resource.namespaced)
                || resource.field_labels.contains(&field);
            if !supported {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            requirements.push(FieldRequirement { field: field.to_string(), value: value.trim().to_string(), negated });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| (field_value(object, &r.field) == r.value) != r.negated)
    }
}

/// Label and field selector of one list or watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_operators() {
        let object = pod(json!({"app": "web", "tier": "front", "n": "5"}));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web,db)", true),
            ("app notin (web,db)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (front)", true),
            ("app=web,tier=back", false),
            ("n>4", true),
            ("n<4", false),
            ("missing notin (a)", true),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector).expect(selector);
            assert_eq!(parsed.matches(&object), expected, "{selector}");
        }
    }

    #[test]
    fn field_selector_for_pods() {
        let object = pod(json!({}));
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", &super::super::resources::PODS)
            .expect("parse");
        assert!(s.matches(&object));
        assert!(!s.matches(&json!({"spec": {"nodeName": "n2"}})));
        assert!(FieldSelector::parse("spec.bogus=1", &super::super::resources::PODS).is_err());
    }
}
