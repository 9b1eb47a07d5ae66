//! The ids of a plain channel's latest publications, so that a repeat (a SPUBLISH
//! Redis executed twice after a client-side retry, or one publication received over
//! two connections while a subscription moves) is delivered once.

/// How many recent publication ids a channel remembers.
const RECENT: usize = 32;

/// Allocated on the first publication that carries an id (never on the embedded
/// broker, whose publications carry none).
#[derive(Default)]
pub struct Recent {
    ids: Vec<u64>,
    next: usize,
}

impl Recent {
    /// Records `uid`; false if it was seen among the latest ones.
    pub fn first_time(&mut self, uid: u64) -> bool {
        if self.ids.contains(&uid) {
            return false;
        }
        if self.ids.len() < RECENT {
            self.ids.push(uid);
        } else {
            self.ids[self.next] = uid;
            self.next = (self.next + 1) % RECENT;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_32_ids() {
        let mut r = Recent::default();
        for id in 1..=40u64 {
            assert!(r.first_time(id));
        }
        assert!(!r.first_time(40));
        assert!(!r.first_time(9), "still among the last 32");
        assert!(r.first_time(8), "forgotten");
    }
}
