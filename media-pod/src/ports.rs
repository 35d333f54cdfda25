//! The RTP/RTCP port pair allocator: hands out even ports (RTCP on the odd port above) from the
//! configured range and takes them back when a call ends.
//!
//! Freed pairs go to the back of the queue, so a port is reused as late as possible: stray
//! packets for a call that just ended are unlikely to reach the next call on the same port.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::config::PortRange;

/// Free and allocated RTP ports of one range.
#[derive(Debug)]
pub struct PortAllocator {
    free: VecDeque<u16>,
    allocated: HashSet<u16>,
}

impl PortAllocator {
    /// All pairs of `range` free.
    pub fn new(range: PortRange) -> Self {
        Self {
            free: range.pairs().collect(),
            allocated: HashSet::new(),
        }
    }

    /// Takes the least recently used free pair; returns its RTP port.
    pub fn allocate(&mut self) -> Option<u16> {
        let port = self.free.pop_front()?;
        self.allocated.insert(port);
        Some(port)
    }

    /// Returns a pair to the pool. Returns false (and changes nothing) for a port that was not
    /// allocated, so a double release cannot duplicate a port in the free list.
    pub fn release(&mut self, rtp_port: u16) -> bool {
        if self.allocated.remove(&rtp_port) {
            self.free.push_back(rtp_port);
            true
        } else {
            false
        }
    }

    /// Pairs currently allocated.
    #[cfg(test)]
    pub fn allocated_pairs(&self) -> usize {
        self.allocated.len()
    }

    /// Pairs in the range, allocated or free.
    pub fn capacity_pairs(&self) -> usize {
        self.allocated.len() + self.free.len()
    }

    /// Pairs currently free.
    #[cfg(test)]
    pub fn free_pairs(&self) -> usize {
        self.free.len()
    }
}

/// The allocator every relay worker's table takes pairs from. Only ng commands and
/// housekeeping lock it (to bind or free pairs), never the packet path.
#[derive(Clone, Debug)]
pub struct PortPool(Arc<Mutex<PortAllocator>>);

impl PortPool {
    /// A pool over `allocator`.
    pub fn new(allocator: PortAllocator) -> Self {
        Self(Arc::new(Mutex::new(allocator)))
    }

    /// [`PortAllocator::allocate`].
    pub fn allocate(&self) -> Option<u16> {
        self.lock().allocate()
    }

    /// [`PortAllocator::release`].
    pub fn release(&self, rtp_port: u16) -> bool {
        self.lock().release(rtp_port)
    }

    /// [`PortAllocator::capacity_pairs`].
    pub fn capacity_pairs(&self) -> usize {
        self.lock().capacity_pairs()
    }

    fn lock(&self) -> MutexGuard<'_, PortAllocator> {
        // The allocator is consistent between its own method calls.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocator(first: u16, last: u16) -> PortAllocator {
        PortAllocator::new(PortRange::new(first, last).unwrap())
    }

    #[test]
    fn allocates_even_ports_until_exhausted() {
        let mut a = allocator(40000, 40005);
        assert_eq!(a.allocate(), Some(40000));
        assert_eq!(a.allocate(), Some(40002));
        assert_eq!(a.allocate(), Some(40004));
        assert_eq!(a.allocate(), None);
        assert_eq!(a.allocated_pairs(), 3);
        assert_eq!(a.free_pairs(), 0);
        assert_eq!(a.capacity_pairs(), 3);
        a.release(40002);
        assert_eq!(a.capacity_pairs(), 3);
    }

    #[test]
    fn reuses_released_ports_last() {
        let mut a = allocator(40000, 40005);
        let first = a.allocate().unwrap();
        assert!(a.release(first));
        assert_eq!(a.allocate(), Some(40002));
        assert_eq!(a.allocate(), Some(40004));
        assert_eq!(a.allocate(), Some(first));
    }

    #[test]
    fn double_release_is_harmless() {
        let mut a = allocator(40000, 40001);
        let p = a.allocate().unwrap();
        assert!(a.release(p));
        assert!(!a.release(p));
        assert!(!a.release(12345));
        assert_eq!(a.free_pairs(), 1);
        assert_eq!(a.allocate(), Some(p));
        assert_eq!(a.allocate(), None);
    }
}
