//! Clock offsets set against the leader's clock: which servers are further off than
//! `cluster.clock.warn`, the sentence that names them, and the log line written when a server's
//! standing changes (not at every measurement). Nothing in the cluster depends on clocks
//! agreeing (SPEC §3); these tell an operator which time source to fix.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// A server whose clock is further from the leader's than `cluster.clock.warn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClockWarning {
    /// The server's id.
    pub server: String,
    /// Its clock minus the leader's, in milliseconds.
    pub offset_ms: i64,
    /// What to tell an operator, e.g. "folio-2's clock is 90 s ahead of the leader's: fix its
    /// time source".
    pub message: String,
}

/// The warning threshold and, per server, the offset last logged as beyond it.
pub struct Clocks {
    warn_ms: i64,
    /// Servers whose offset was last logged as beyond the threshold, with that offset.
    logged: Mutex<HashMap<String, i64>>,
}

/// At most this many servers' standings are remembered for logging; beyond it the oldest
/// standing is forgotten (a forgotten server is logged again when next seen off).
const REMEMBERED: usize = 1024;

impl Clocks {
    pub fn new(warn: Duration) -> Clocks {
        Clocks {
            warn_ms: warn.as_millis().min(i64::MAX as u128) as i64,
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// The threshold in milliseconds.
    pub fn warn_ms(&self) -> i64 {
        self.warn_ms
    }

    /// Whether `offset_ms` (a server's clock minus the leader's) is beyond the threshold.
    pub fn is_off(&self, offset_ms: i64) -> bool {
        offset_ms.unsigned_abs() > self.warn_ms.unsigned_abs()
    }

    /// Whether `server`, whose clock was last measured `offset_ms` from the leader's, counts as
    /// off: beyond the threshold, or, once logged as off, still beyond four fifths of it (one
    /// measurement a little either side of the threshold does not make it come and go).
    fn counts_as_off(&self, logged: &HashMap<String, i64>, server: &str, offset_ms: i64) -> bool {
        self.is_off(offset_ms)
            || (logged.contains_key(server)
                && offset_ms.unsigned_abs() > self.warn_ms.unsigned_abs() / 5 * 4)
    }

    /// Forgets which servers were logged as off (another server leads: offsets are measured
    /// against its clock from now on).
    pub fn forget(&self) {
        crate::lock(&self.logged).clear();
    }

    /// The warnings for `offsets` (each server's clock minus the leader's), by server id.
    pub fn warnings<'a>(
        &self,
        offsets: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Vec<ClockWarning> {
        let logged = crate::lock(&self.logged);
        let mut out: Vec<ClockWarning> = offsets
            .into_iter()
            .filter(|(server, off)| self.counts_as_off(&logged, server, *off))
            .map(|(server, offset_ms)| ClockWarning {
                server: server.to_string(),
                offset_ms,
                message: describe(server, offset_ms),
            })
            .collect();
        out.sort_by(|a, b| a.server.cmp(&b.server));
        out
    }

    /// Notes a measurement of `server`'s clock against the leader's and logs it when its
    /// standing changed: it went beyond the threshold, moved by more than the threshold while
    /// beyond it, or came back within four fifths of it.
    pub fn note(&self, server: &str, offset_ms: i64) {
        let mut logged = crate::lock(&self.logged);
        let off = self.counts_as_off(&logged, server, offset_ms);
        match (logged.get(server).copied(), off) {
            (None, true) => {
                if logged.len() >= REMEMBERED {
                    logged.clear();
                }
                logged.insert(server.to_string(), offset_ms);
                tracing::warn!(server, offset_ms, "{}", describe(server, offset_ms));
            }
            (Some(before), true) if offset_ms.abs_diff(before) <= self.warn_ms.unsigned_abs() => {}
            (Some(_), true) => {
                logged.insert(server.to_string(), offset_ms);
                tracing::warn!(server, offset_ms, "{}", describe(server, offset_ms));
            }
            (Some(_), false) => {
                logged.remove(server);
                tracing::info!(
                    server,
                    offset_ms,
                    "{server}'s clock agrees with the leader's again (within {})",
                    span(self.warn_ms)
                );
            }
            (None, false) => {}
        }
    }
}

/// "folio-2's clock is 90 s ahead of the leader's: fix its time source".
pub fn describe(server: &str, offset_ms: i64) -> String {
    let way = if offset_ms > 0 { "ahead of" } else { "behind" };
    format!(
        "{server}'s clock is {} {way} the leader's: fix its time source",
        span(offset_ms)
    )
}

/// A length of time for people: "90 s", "10 min", "10 min 5 s", "2 h 3 min".
fn span(ms: i64) -> String {
    let s = (ms.unsigned_abs() + 500) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 if s.is_multiple_of(60) => format!("{} min", s / 60),
        120..7200 => format!("{} min {} s", s / 60, s % 60),
        _ if s % 3600 / 60 == 0 => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_plainly() {
        assert_eq!(
            describe("folio-2", 90_000),
            "folio-2's clock is 90 s ahead of the leader's: fix its time source"
        );
        assert_eq!(
            describe("f1", -600_300),
            "f1's clock is 10 min behind the leader's: fix its time source"
        );
        assert_eq!(span(605_000), "10 min 5 s");
        assert_eq!(span(-3 * 3_600_000 - 120_000), "3 h 2 min");
        assert_eq!(span(7_200_000), "2 h");
    }

    #[test]
    fn only_servers_beyond_the_threshold_are_named() {
        let c = Clocks::new(Duration::from_secs(5));
        let w = c.warnings([("b", 5_000), ("c", -5_001), ("a", 90_000), ("d", 0)]);
        let named: Vec<&str> = w.iter().map(|w| w.server.as_str()).collect();
        assert_eq!(named, ["a", "c"]);
        assert_eq!(w[1].offset_ms, -5_001);
    }

    #[test]
    fn a_clock_near_the_threshold_does_not_come_and_go() {
        let c = Clocks::new(Duration::from_secs(5));
        c.note("f", 5_200);
        assert_eq!(
            c.warnings([("f", 4_900)]).len(),
            1,
            "still off just under 5 s"
        );
        c.note("f", 4_900);
        assert_eq!(c.warnings([("f", 4_100)]).len(), 1, "off down to 4 s");
        c.note("f", 3_900);
        assert!(
            c.warnings([("f", 4_900)]).is_empty(),
            "within again: 5 s to go off"
        );
        // Measurements at the ends of the range change nothing but the arithmetic's width.
        c.note("g", i64::MIN);
        c.note("g", i64::MAX);
        c.forget();
        assert!(c.warnings([("f", 4_900)]).is_empty());
    }
}
