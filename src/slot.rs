//! Redis Cluster hash slots.
