//! One line for an error and all its causes ("outer: inner: root cause"): for logs, for pod
//! status messages, and for errors that cross the monitor's socket as text.

pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_every_cause() {
        let error = Outer(std::io::Error::other("root cause"));
        assert_eq!(super::error_chain(&error), "outer: root cause");
    }
}
