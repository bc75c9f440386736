//! Failed-login rate limiting: at most `auth.login.max_failures` failures per user name and per
//! client address within `auth.login.window`; beyond that, logins answer 429 with Retry-After
//! until the oldest failure leaves the window. Kept in memory per server: a restart forgets it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys with no failure inside the window are dropped once the map grows past this.
const PRUNE_ABOVE: usize = 10_000;

pub struct LoginLimiter {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        LoginLimiter {
            max: max as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` when any key is over the limit.
    pub fn check(&self, keys: &[String]) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = crate::lock(&self.failures);
        let mut wait = None;
        for key in keys {
            if let Some(q) = map.get_mut(key) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.max
                    && let Some(oldest) = q.front()
                {
                    let left = self.window.saturating_sub(now.duration_since(*oldest));
                    wait = Some(wait.unwrap_or(0).max(left.as_secs() + 1));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Records one failure against every key.
    pub fn fail(&self, keys: &[String]) {
        let now = Instant::now();
        let mut map = crate::lock(&self.failures);
        if map.len() > PRUNE_ABOVE {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for key in keys {
            let q = map.entry(key.clone()).or_default();
            q.push_back(now);
            while q.len() > self.max {
                q.pop_front();
            }
        }
    }

    /// Forgets a key's failures (after a successful login).
    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_after_max_failures_per_key() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        let k = vec!["user:a".to_string(), "ip:1".to_string()];
        assert!(l.check(&k).is_ok());
        l.fail(&k);
        l.fail(&k);
        let secs = l.check(&k).unwrap_err();
        assert!((1..=61).contains(&secs));
        assert!(l.check(&["ip:2".to_string()]).is_ok());
        l.clear("user:a");
        assert!(l.check(&["user:a".to_string()]).is_ok());
        assert!(
            l.check(&["ip:1".to_string()]).is_err(),
            "the address stays limited"
        );
    }
}
