//! Redis Cluster harness (cluster issue).
