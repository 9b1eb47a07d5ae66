//! The Redis Cluster slot map.
