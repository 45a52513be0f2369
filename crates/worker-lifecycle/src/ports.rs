//! Worker ports: taken from a configured range, checked free by binding, and held by the
//! hive until the worker's process is gone.
//!
//! A [`PortLease`] is the hold; dropping it gives the port back. Concurrent spawns never get
//! the same port because the choice and the reservation happen under one lock. Ports are
//! handed out round-robin, so a port just given back is not the next one taken.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use crate::error::LifecycleError;

/// The ports of one hive.
#[derive(Clone)]
pub(crate) struct PortAllocator {
    inner: Arc<Inner>,
}

struct Inner {
    // std Mutex: held while choosing and reserving, never across an await.
    state: Mutex<State>,
}

struct State {
    /// Where new leases come from (a reload may change it).
    range: RangeInclusive<u16>,
    held: BTreeSet<u16>,
    next: u16,
}

/// A port held for one worker; given back on drop.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    owner: Arc<Inner>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        write!(f, "PortAllocator({:?})", state.range)
    }
}

impl PortLease {
    /// The port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.owner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .remove(&self.port);
    }
}

impl PortAllocator {
    /// An allocator over `range` (inclusive).
    pub(crate) fn new(range: RangeInclusive<u16>) -> Self {
        let next = *range.start();
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    range,
                    held: BTreeSet::new(),
                    next,
                }),
            }),
        }
    }

    /// Takes a free port: not held by this hive, and bindable on 127.0.0.1 and 0.0.0.0.
    pub(crate) fn lease(&self) -> Result<PortLease, LifecycleError> {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let (first, last) = (*state.range.start(), *state.range.end());
        let count = u32::from(last) - u32::from(first) + 1;
        let start = state.next.clamp(first, last);
        for offset in 0..count {
            let port = (u32::from(start) - u32::from(first) + offset) % count + u32::from(first);
            let port = u16::try_from(port).unwrap_or(last);
            if state.held.contains(&port) || !bindable(port) {
                continue;
            }
            state.held.insert(port);
            state.next = if port == last { first } else { port + 1 };
            return Ok(PortLease {
                port,
                owner: self.inner.clone(),
            });
        }
        Err(LifecycleError::NoFreePort {
            first,
            last,
            held: state.held.len(),
        })
    }

    /// Leases from `range` from now on; ports held stay held until released.
    pub(crate) fn set_range(&self, range: RangeInclusive<u16>) {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        // An unchanged range keeps its rotation: a port just given back is not taken next.
        if state.range != range {
            state.next = *range.start();
            state.range = range;
        }
    }

    /// Holds a specific port (a worker adopted after a restart keeps its port).
    pub(crate) fn lease_exact(&self, port: u16) -> Option<PortLease> {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        state.held.insert(port).then(|| PortLease {
            port,
            owner: self.inner.clone(),
        })
    }

    /// How many ports are held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .len()
    }
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_range(len: u16) -> RangeInclusive<u16> {
        // `len` consecutive bindable ports, searched from a spot that differs per test.
        let mut start = 42_000 + (std::process::id() % 500) as u16 * 20 + len * 3;
        loop {
            match (start..start + len).find(|port| !bindable(*port)) {
                Some(busy) => start = busy + 1,
                None => return start..=start + len - 1,
            }
        }
    }

    #[test]
    fn leases_are_distinct_and_given_back_on_drop() {
        let ports = PortAllocator::new(free_range(3));
        let a = ports.lease().unwrap();
        let b = ports.lease().unwrap();
        let c = ports.lease().unwrap();
        assert_eq!(BTreeSet::from([a.port(), b.port(), c.port()]).len(), 3);
        assert!(matches!(
            ports.lease(),
            Err(LifecycleError::NoFreePort { held: 3, .. })
        ));
        let freed = b.port();
        drop(b);
        assert_eq!(ports.lease().unwrap().port(), freed);
    }

    #[test]
    fn skips_ports_in_use_by_others() {
        let range = free_range(2);
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, *range.start())).unwrap();
        let ports = PortAllocator::new(range.clone());
        assert_eq!(ports.lease().unwrap().port(), *range.end());
        drop(squatter);
    }

    #[test]
    fn concurrent_leases_never_collide() {
        let ports = PortAllocator::new(free_range(16));
        let leases: Vec<PortLease> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| s.spawn(|| ports.lease().unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let distinct: BTreeSet<u16> = leases.iter().map(PortLease::port).collect();
        assert_eq!(distinct.len(), 16);
        assert_eq!(ports.held(), 16);
    }
}
