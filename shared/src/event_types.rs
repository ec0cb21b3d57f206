//! The event catalogue of the integration guide, and subscription filters over it.

use serde::Serialize;

/// Every event type the guide documents, with its description, in the guide's order.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    (
        "workflow.definition.created",
        "A new workflow definition has been created",
    ),
    ("workflow.definition.updated", "A workflow definition has been updated"),
    ("workflow.definition.deleted", "A workflow definition has been deleted"),
    ("workflow.execution.started", "A workflow execution has started"),
    (
        "workflow.execution.completed",
        "A workflow execution has completed successfully",
    ),
    ("workflow.execution.failed", "A workflow execution has failed"),
    (
        "workflow.execution.cancelled",
        "A workflow execution has been cancelled",
    ),
    ("task.execution.started", "A task execution has started"),
    (
        "task.execution.completed",
        "A task execution has completed successfully",
    ),
    ("task.execution.failed", "A task execution has failed"),
    ("task.execution.cancelled", "A task execution has been cancelled"),
    ("progress.updated", "Progress has been updated for a workflow execution"),
    (
        "blocker.detected",
        "A blocker has been detected in a workflow execution",
    ),
    (
        "blocker.resolved",
        "A blocker has been resolved in a workflow execution",
    ),
    (
        "milestone.achieved",
        "A milestone has been achieved in a workflow execution",
    ),
    (
        "resource.allocated",
        "Resources have been allocated for a task execution",
    ),
    (
        "resource.released",
        "Resources have been released after a task execution",
    ),
    ("resource.shortage", "A resource shortage has been detected"),
    (
        "synchronization.point.reached",
        "A synchronization point has been reached",
    ),
    (
        "synchronization.point.completed",
        "A synchronization point has been completed",
    ),
    ("synchronization.point.failed", "A synchronization point has failed"),
    ("system.error", "A system error has occurred"),
    ("system.warning", "A system warning has occurred"),
    ("system.info", "A system information event has occurred"),
];

/// The guide's section headings, used to group the catalogue for people reading it.
pub fn category_of(event: &str) -> &'static str {
    match event.split('.').next().unwrap_or_default() {
        "workflow" if event.starts_with("workflow.definition.") => "Workflow Definition Events",
        "workflow" => "Workflow Execution Events",
        "task" => "Task Execution Events",
        "progress" | "blocker" | "milestone" => "Progress Tracking Events",
        "resource" => "Resource Management Events",
        "synchronization" => "Synchronization Events",
        _ => "System Events",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventTypeInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub category: &'static str,
}

pub fn catalogue() -> Vec<EventTypeInfo> {
    EVENT_TYPES
        .iter()
        .map(|(name, description)| EventTypeInfo {
            name,
            description,
            category: category_of(name),
        })
        .collect()
}

/// A known event type, interned to the catalogue's static string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(&'static str);

impl EventType {
    pub fn parse(s: &str) -> Option<Self> {
        EVENT_TYPES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(name, _)| EventType(name))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The subscription filters that match this event, most specific first: the type itself,
    /// each `prefix.*` wildcard above it, and `*`. Ingest looks each one up by key.
    pub fn matching_filters(&self) -> Vec<String> {
        let mut out = vec![self.0.to_string()];
        let parts: Vec<&str> = self.0.split('.').collect();
        for n in (1..parts.len()).rev() {
            out.push(format!("{}.*", parts[..n].join(".")));
        }
        out.push("*".to_string());
        out
    }
}

impl serde::Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventType::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown event type '{s}'")))
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// What a webhook subscribes to: an exact type, a `prefix.*` wildcard that matches at least
/// one known type, or `*` for everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventFilter(String);

impl EventFilter {
    pub fn parse(s: &str) -> Option<Self> {
        if s == "*" || EventType::parse(s).is_some() {
            return Some(EventFilter(s.to_string()));
        }
        let prefix = s.strip_suffix(".*")?;
        if prefix.is_empty() || prefix.contains('*') {
            return None;
        }
        let dotted = format!("{prefix}.");
        EVENT_TYPES
            .iter()
            .any(|(name, _)| name.starts_with(&dotted))
            .then(|| EventFilter(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, event: EventType) -> bool {
        event.matching_filters().iter().any(|f| f == &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_every_type_of_the_guide() {
        // The issue said 26; the guide, which is the contract, lists 24.
        assert_eq!(EVENT_TYPES.len(), 24);
    }

    #[test]
    fn filters_and_wildcards() {
        let ev = EventType::parse("workflow.execution.completed").expect("known");
        assert_eq!(
            ev.matching_filters(),
            vec![
                "workflow.execution.completed",
                "workflow.execution.*",
                "workflow.*",
                "*"
            ]
        );
        assert!(EventFilter::parse("workflow.*").expect("ok").matches(ev));
        assert!(EventFilter::parse("*").expect("ok").matches(ev));
        assert!(!EventFilter::parse("task.*").expect("ok").matches(ev));
        assert!(EventFilter::parse("nope.*").is_none());
        assert!(EventFilter::parse("work*").is_none());
        assert!(EventFilter::parse(".*").is_none());
        assert!(EventFilter::parse("workflow.execution").is_none());
        assert!(EventFilter::parse("workflow.execution.complete").is_none());
    }
}
