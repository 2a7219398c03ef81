//! Who subscribes to the configuration, as the modules that serve, count and admit
//! subscribers (distribution, metrics, the registry) all name them.

use std::fmt;

/// A waypoint: its Gateway's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaypointId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WaypointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SubscriberKind {
    #[default]
    Agent,
    Waypoint,
}

impl SubscriberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriberKind::Agent => "agent",
            SubscriberKind::Waypoint => "waypoint",
        }
    }
}
