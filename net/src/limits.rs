//! Connection limits: connections on the server, per user and per IP (counted across shards), and the
//! browser Origin allow-list. (The inbound message rate of one connection is an engine rule:
//! `tickwire_fanout::engine::conn::RateLimiter`.)
//!
//! Connection counts are shared by every shard: a total in one atomic and per-key counts in a map split
//! into [`STRIPES`] mutexes, touched once when a connection opens and once when it closes (never on the
//! message path). A [`ConnSlot`] holds the counts it took and gives them back when dropped.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tickwire_core::ws::close;

/// Stripes of each per-key map: enough that shards rarely meet on one lock.
const STRIPES: usize = 16;

/// Why a new connection is refused, with the close code it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections`.
    Server,
    /// The user holds `max_connections_per_user`.
    User,
    /// The IP address holds `max_connections_per_ip`.
    Ip,
}

impl Refusal {
    /// The close code and reason of PROTOCOL.md.
    pub fn close(self) -> (u16, &'static str) {
        match self {
            Refusal::User => (close::POLICY_VIOLATION, "connection limit exceeded"),
            Refusal::Server | Refusal::Ip => (close::TRY_AGAIN_LATER, "try again later"),
        }
    }
}

/// Counts per key, split into stripes.
#[derive(Debug)]
struct Counts<K> {
    stripes: Vec<Mutex<HashMap<K, usize>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new() -> Counts<K> {
        Counts { stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(), hasher: Default::default() }
    }

    fn stripe(&self, key: &K) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        let i = self.hasher.hash_one(key) as usize % STRIPES;
        // A poisoned stripe still holds valid counts (the critical sections below cannot panic midway).
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one count of `key` unless it holds `max` already (0: no limit).
    fn try_take(&self, key: &K, max: usize) -> bool {
        let mut map = self.stripe(key);
        let n = map.entry(key.clone()).or_insert(0);
        if max != 0 && *n >= max {
            if *n == 0 {
                map.remove(key);
            }
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, key: &K) {
        let mut map = self.stripe(key);
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    fn count(&self, key: &K) -> usize {
        self.stripe(key).get(key).copied().unwrap_or(0)
    }
}

/// The connection limits of the whole server.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_user: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    users: Counts<Arc<str>>,
    ips: Counts<IpAddr>,
}

impl ConnLimits {
    /// Limits of 0 per user or per IP mean none.
    pub fn new(max_total: usize, max_per_user: usize, max_per_ip: usize) -> ConnLimits {
        ConnLimits {
            max_total,
            max_per_user,
            max_per_ip,
            total: AtomicUsize::new(0),
            users: Counts::new(),
            ips: Counts::new(),
        }
    }

    /// Counts a new connection from `ip` of `user` (if known), or says why it may not open.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>, user: Option<&Arc<str>>) -> Result<ConnSlot, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Server);
        }
        let mut slot = ConnSlot { limits: self.clone(), ip: None, user: None };
        // A limit of 0 is none: nothing to count, no lock taken.
        if let Some(ip) = ip.filter(|_| self.max_per_ip != 0) {
            if !self.ips.try_take(&ip, self.max_per_ip) {
                return Err(Refusal::Ip);
            }
            slot.ip = Some(ip);
        }
        if let Some(user) = user.filter(|_| self.max_per_user != 0) {
            if !self.users.try_take(user, self.max_per_user) {
                return Err(Refusal::User);
            }
            slot.user = Some(user.clone());
        }
        Ok(slot)
    }

    /// Connections open now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Connections of `user` open now (counted only under a per-user limit).
    pub fn of_user(&self, user: &Arc<str>) -> usize {
        self.users.count(user)
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }
}

/// One admitted connection's counts, given back on drop.
#[derive(Debug)]
pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    ip: Option<IpAddr>,
    user: Option<Arc<str>>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(ip) = &self.ip {
            self.limits.ips.give_back(ip);
        }
        if let Some(user) = &self.user {
            self.limits.users.give_back(user);
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a request's `Origin` may upgrade: requests without one (not from a browser) may; with an
/// allow-list, a browser's origin must be on it exactly (ASCII case-insensitive, no trailing slash).
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        None => true,
        Some(_) if allowed.is_empty() => true,
        Some(o) => {
            let o = o.trim().trim_end_matches('/');
            allowed.iter().any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(o))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_total_user_and_ip_and_gives_back() {
        let limits = Arc::new(ConnLimits::new(3, 2, 0));
        let u: Arc<str> = "u-1".into();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = limits.admit(Some(ip), Some(&u)).unwrap();
        let b = limits.admit(Some(ip), Some(&u)).unwrap();
        assert_eq!(limits.admit(Some(ip), Some(&u)).unwrap_err(), Refusal::User);
        assert_eq!(limits.total(), 2, "a refusal gives its counts back");
        let c = limits.admit(Some(ip), None).unwrap();
        assert_eq!(limits.admit(None, None).unwrap_err(), Refusal::Server);
        drop(a);
        assert_eq!(limits.of_user(&u), 1);
        let _d = limits.admit(None, Some(&u)).unwrap();
        drop((b, c));
        assert_eq!(limits.total(), 1);
        assert_eq!(Refusal::User.close(), (1008, "connection limit exceeded"));
        assert_eq!(Refusal::Ip.close().0, 1013);
    }

    #[test]
    fn per_ip_limit() {
        let limits = Arc::new(ConnLimits::new(100, 0, 1));
        let ip: IpAddr = "::1".parse().unwrap();
        let u: Arc<str> = "u".into();
        let _a = limits.admit(Some(ip), Some(&u)).unwrap();
        assert_eq!(limits.of_user(&u), 0, "no per-user limit: not counted");
        assert_eq!(limits.admit(Some(ip), None).unwrap_err(), Refusal::Ip);
        assert!(limits.admit(Some("::2".parse().unwrap()), None).is_ok());
        assert_eq!(limits.ips.count(&ip), 1);
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(&allowed, None));
        assert!(origin_allowed(&allowed, Some("https://APP.example.com/")));
        assert!(!origin_allowed(&allowed, Some("https://evil.example.com")));
        assert!(!origin_allowed(&allowed, Some("null")));
        assert!(origin_allowed(&[], Some("https://anything")));
    }
}
