//! Outgoing frames waiting for the air (and the duty-cycle budget): critical first,
//! first in first out within a priority.

use std::collections::VecDeque;

use crate::frame::{AlertState, Severity};

/// How urgently a frame goes out, lowest first (`Heartbeat < Resolved < Info <
/// Warning < Critical`).
///
/// Resolutions rank below every firing alert so that a resolution never overtakes
/// its own alert's firing frame (FIFO within a priority keeps the order otherwise);
/// a firing alert is news, a resolution only ends one. Heartbeats go last: they only
/// say the node is alive, and any other frame says that too.
///
/// A firing frame can still overtake an *earlier* resolution of the same alert when
/// it flaps; the sender should drop the stale resolution ([`TxQueue::retain`]) and
/// the gateway keeps the state of the highest sequence per alert.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Priority {
    /// "Still alive, nothing firing."
    Heartbeat = 0,
    /// An alert resolved (any severity).
    Resolved = 1,
    /// An info alert fires.
    Info = 2,
    /// A warning fires.
    Warning = 3,
    /// A critical alert fires.
    Critical = 4,
}

impl Priority {
    /// All priorities, highest (first out) first.
    pub const HIGHEST_FIRST: [Priority; 5] = [
        Priority::Critical,
        Priority::Warning,
        Priority::Info,
        Priority::Resolved,
        Priority::Heartbeat,
    ];

    /// The priority of an alert frame with this state and severity.
    pub fn for_alert(state: AlertState, severity: Severity) -> Self {
        match (state, severity) {
            (AlertState::Heartbeat, _) => Priority::Heartbeat,
            (AlertState::Resolved, _) => Priority::Resolved,
            (AlertState::Firing, Severity::Info) => Priority::Info,
            (AlertState::Firing, Severity::Warning) => Priority::Warning,
            (AlertState::Firing, Severity::Critical) => Priority::Critical,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A priority queue of outgoing items.
#[derive(Debug, Clone)]
pub struct TxQueue<T> {
    /// One FIFO per priority, indexed by `Priority as usize`.
    lanes: [VecDeque<T>; 5],
}

impl<T> Default for TxQueue<T> {
    fn default() -> Self {
        Self {
            lanes: Default::default(),
        }
    }
}

impl<T> TxQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `item` behind those of the same priority.
    pub fn push(&mut self, priority: Priority, item: T) {
        self.lanes[priority.index()].push_back(item);
    }

    /// Takes the first item of the highest priority.
    pub fn pop(&mut self) -> Option<T> {
        self.pop_with_priority().map(|(_, item)| item)
    }

    /// Takes the first item of the highest priority, with its priority.
    pub fn pop_with_priority(&mut self) -> Option<(Priority, T)> {
        Priority::HIGHEST_FIRST
            .into_iter()
            .find_map(|p| self.lanes[p.index()].pop_front().map(|item| (p, item)))
    }

    /// The item [`pop`](Self::pop) would take.
    pub fn peek(&self) -> Option<&T> {
        self.peek_with_priority().map(|(_, item)| item)
    }

    /// The item [`pop`](Self::pop) would take, with its priority.
    pub fn peek_with_priority(&self) -> Option<(Priority, &T)> {
        Priority::HIGHEST_FIRST
            .into_iter()
            .find_map(|p| self.lanes[p.index()].front().map(|item| (p, item)))
    }

    /// Takes the last item of the lowest priority: what to shed when the queue is too
    /// long.
    pub fn pop_lowest(&mut self) -> Option<(Priority, T)> {
        Priority::HIGHEST_FIRST
            .into_iter()
            .rev()
            .find_map(|p| self.lanes[p.index()].pop_back().map(|item| (p, item)))
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }

    /// The items in the order [`pop`](Self::pop) would take them.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.iter_with_priority().map(|(_, item)| item)
    }

    /// The items with their priorities, in the order [`pop`](Self::pop) would take
    /// them.
    pub fn iter_with_priority(&self) -> impl Iterator<Item = (Priority, &T)> + '_ {
        Priority::HIGHEST_FIRST
            .into_iter()
            .flat_map(move |p| self.lanes[p.index()].iter().map(move |item| (p, item)))
    }

    /// Keeps only the items for which `keep` returns true (order unchanged).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for lane in &mut self.lanes {
            lane.retain(&mut keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_first_fifo_within() {
        let mut q = TxQueue::new();
        assert!(q.is_empty());
        q.push(Priority::Heartbeat, "hb");
        q.push(Priority::Warning, "w1");
        q.push(Priority::Resolved, "r1");
        q.push(Priority::Critical, "c1");
        q.push(Priority::Info, "i1");
        q.push(Priority::Warning, "w2");
        q.push(Priority::Critical, "c2");
        assert_eq!(q.len(), 7);
        assert_eq!(q.peek(), Some(&"c1"));
        assert_eq!(q.peek_with_priority(), Some((Priority::Critical, &"c1")));
        let order: Vec<_> = q.iter().copied().collect();
        assert_eq!(order, ["c1", "c2", "w1", "w2", "i1", "r1", "hb"]);
        let mut popped = Vec::new();
        while let Some(x) = q.pop() {
            popped.push(x);
        }
        assert_eq!(popped, order);
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        assert_eq!(q.peek(), None);
    }

    #[test]
    fn later_critical_overtakes() {
        let mut q = TxQueue::new();
        q.push(Priority::Info, 1);
        assert_eq!(q.peek(), Some(&1));
        q.push(Priority::Critical, 2);
        assert_eq!(q.pop_with_priority(), Some((Priority::Critical, 2)));
        assert_eq!(q.pop_with_priority(), Some((Priority::Info, 1)));
    }

    #[test]
    fn retain_and_shed() {
        let mut q = TxQueue::new();
        for i in 0..6 {
            q.push(Priority::HIGHEST_FIRST[i % 5], i);
        }
        q.retain(|&i| i % 2 == 0);
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [0, 2, 4]);
        assert_eq!(q.pop_lowest(), Some((Priority::Heartbeat, 4)));
        assert_eq!(q.pop_lowest(), Some((Priority::Info, 2)));
        assert_eq!(q.len(), 1);
        q.retain(|_| false);
        assert!(q.is_empty());
        assert_eq!(q.pop_lowest(), None);
    }

    #[test]
    fn priorities_of_alerts() {
        use AlertState::*;
        use Severity::*;
        assert_eq!(Priority::for_alert(Firing, Critical), Priority::Critical);
        assert_eq!(Priority::for_alert(Firing, Warning), Priority::Warning);
        assert_eq!(Priority::for_alert(Firing, Info), Priority::Info);
        assert_eq!(Priority::for_alert(Resolved, Critical), Priority::Resolved);
        assert_eq!(Priority::for_alert(Heartbeat, Info), Priority::Heartbeat);
        // A resolution never overtakes any firing alert.
        for s in [Info, Warning, Critical] {
            assert!(Priority::for_alert(Resolved, s) < Priority::for_alert(Firing, Info));
        }
        let mut sorted = Priority::HIGHEST_FIRST;
        sorted.sort();
        sorted.reverse();
        assert_eq!(sorted, Priority::HIGHEST_FIRST);
    }
}
