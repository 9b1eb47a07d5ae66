//! Free loopback ports for Redis nodes and servers started by a test.

use std::net::TcpListener;

/// A run of `count` free loopback ports whose cluster-bus ports (+10000) are free
/// too, below the kernel's ephemeral range (32768 and up on Linux): ports handed
/// out by `bind(0)` or taken by outgoing connections could be grabbed by the test's
/// own client sockets between this check and the Redis node binding them.
pub fn free_cluster_ports(count: u16) -> u16 {
    'search: for _ in 0..500 {
        let base = 11_000 + (rand::random::<u16>() % 11_000);
        for p in base..base + count {
            if TcpListener::bind(("127.0.0.1", p)).is_err()
                || TcpListener::bind(("127.0.0.1", p + 10_000)).is_err()
            {
                continue 'search;
            }
        }
        return base;
    }
    panic!("no run of {count} free port pairs found");
}

/// A free loopback port for a server (any range).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
