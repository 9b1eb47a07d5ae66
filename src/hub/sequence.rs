//! Delivery order of one history channel on this instance: the last offset
//! delivered, the epoch seen, and the publications held back while a gap is read
//! from the history. Pure bookkeeping; the hub calls it under the channel's lock
//! and does the fan-out it decides.

use std::sync::Arc;

use crate::publication::Publication;

#[derive(Default)]
pub struct Sequence {
    last: Option<u64>,
    epoch: Option<Arc<str>>,
    filling: bool,
    held: Vec<Publication>,
}

/// What to do with one arriving publication.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The next offset: fan it out.
    Deliver,
    /// Already delivered here: drop it.
    Repeat,
    /// Held back while a gap is being read.
    Held,
    /// An offset jumped: held back, and the history after `after` must be read.
    Gap { after: u64 },
}

/// What a finished gap fill delivers.
pub struct Filled {
    /// In offset order.
    pub deliver: Vec<Publication>,
    /// Offsets the history no longer had.
    pub lost: u64,
}

impl Sequence {
    /// An arriving publication with `offset` (history channels always carry one).
    pub fn arrive(&mut self, p: &Publication, offset: u64) -> Step {
        if self.epoch.is_some() && self.epoch != p.epoch {
            // The history was reset: earlier offsets mean nothing any more.
            tracing::info!(channel = %p.channel, "history epoch changed");
            *self = Sequence::default();
        }
        self.epoch = p.epoch.clone();
        if self.filling {
            self.held.push(p.clone());
            return Step::Held;
        }
        match self.last {
            Some(last) if offset <= last => Step::Repeat,
            Some(last) if offset > last + 1 => {
                self.filling = true;
                self.held.push(p.clone());
                Step::Gap { after: last }
            }
            _ => {
                self.last = Some(offset);
                Step::Deliver
            }
        }
    }

    /// The subscription was lost and is live again: if anything was delivered
    /// before, the history after it must be read. Returns that offset.
    pub fn resubscribed(&mut self) -> Option<u64> {
        match (self.last, self.filling) {
            (Some(last), false) => {
                self.filling = true;
                Some(last)
            }
            _ => None,
        }
    }

    /// A subscriber started at `top`: an empty sequence starts there too.
    pub fn start_at(&mut self, top: u64) {
        if self.last.is_none() {
            self.last = Some(top);
        }
    }

    /// The gap's publications read from history (possibly none): returns them and
    /// what was held back, in offset order, without what was delivered already.
    pub fn fill(&mut self, mut found: Vec<Publication>) -> Filled {
        let held = std::mem::take(&mut self.held);
        found.retain(|p| self.epoch.is_none() || p.epoch == self.epoch);
        found.extend(held);
        found.sort_by_key(|p| p.offset.unwrap_or(0));
        let mut lost = 0;
        let mut deliver = Vec::with_capacity(found.len());
        for p in found {
            let offset = p.offset.unwrap_or(0);
            if let Some(last) = self.last {
                if offset <= last {
                    continue;
                }
                lost += offset - last - 1;
            }
            self.last = Some(offset);
            deliver.push(p);
        }
        self.filling = false;
        Filled { deliver, lost }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::channel::Channel;

    fn p(offset: u64, epoch: &str) -> Publication {
        let mut p = Publication::new(
            Channel::parse("h:x").unwrap(),
            RawValue::from_string("1".into()).unwrap(),
            None,
        );
        p.offset = Some(offset);
        p.epoch = Some(Arc::from(epoch));
        p
    }

    fn offsets(f: &Filled) -> Vec<u64> {
        f.deliver.iter().filter_map(|p| p.offset).collect()
    }

    #[test]
    fn consecutive_offsets_are_delivered_and_repeats_dropped() {
        let mut s = Sequence::default();
        s.start_at(4);
        assert_eq!(s.arrive(&p(5, "e"), 5), Step::Deliver);
        assert_eq!(s.arrive(&p(5, "e"), 5), Step::Repeat);
        assert_eq!(s.arrive(&p(3, "e"), 3), Step::Repeat);
        assert_eq!(s.arrive(&p(6, "e"), 6), Step::Deliver);
    }

    #[test]
    fn a_jump_holds_back_until_the_gap_is_filled() {
        let mut s = Sequence::default();
        s.start_at(1);
        assert_eq!(s.arrive(&p(4, "e"), 4), Step::Gap { after: 1 });
        assert_eq!(s.arrive(&p(5, "e"), 5), Step::Held);
        // The history still has 2 but lost 3; 4 arrives twice (read and held).
        let f = s.fill(vec![p(2, "e"), p(4, "e")]);
        assert_eq!(offsets(&f), vec![2, 4, 5]);
        assert_eq!(f.lost, 1);
        assert_eq!(s.arrive(&p(6, "e"), 6), Step::Deliver);
    }

    #[test]
    fn a_resubscribe_reads_after_the_last_delivered_offset_once() {
        let mut s = Sequence::default();
        assert_eq!(s.resubscribed(), None, "nothing delivered yet");
        s.start_at(7);
        assert_eq!(s.resubscribed(), Some(7));
        assert_eq!(s.resubscribed(), None, "already filling");
        let f = s.fill(vec![p(8, "e")]);
        assert_eq!(offsets(&f), vec![8]);
    }

    #[test]
    fn a_new_epoch_starts_over() {
        let mut s = Sequence::default();
        s.start_at(10);
        assert_eq!(s.arrive(&p(11, "old"), 11), Step::Deliver);
        assert_eq!(s.arrive(&p(1, "new"), 1), Step::Deliver);
        assert_eq!(s.arrive(&p(2, "new"), 2), Step::Deliver);
        // A fill keeps only publications of the current epoch.
        s.resubscribed();
        let f = s.fill(vec![p(12, "old"), p(3, "new")]);
        assert_eq!(offsets(&f), vec![3]);
    }
}
