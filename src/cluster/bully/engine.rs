//! The BULLY election as a pure state machine: events in (ticks, heartbeats heard, the current
//! term), commands out (send heartbeats, lead, follow, remember members). No sockets, no clocks:
//! time is the `now` each event carries, so the rules are unit-tested exactly.
//!
//! The rules:
//! 1. A member is *alive* while its last heartbeat is at most `timeout` old, and *stable* once it
//!    has been alive (and, for this server, not recently deposed) for `stability`. Silence counts
//!    only while this server has been sending heartbeats: after its start or a stall (ticks further
//!    apart than `timeout`), members it heard before count as alive for another `timeout`, so a
//!    slow start or a pause never makes it claim leadership over members that are merely unasked.
//! 2. With no alive leader, the lowest alive id claims leadership at once, with a term above every
//!    term it has seen.
//! 3. A live leader is pre-empted only by a lower id that is stable, so a flapping server cannot
//!    cause election storms; the lower id claims with a new, higher term.
//! 4. When two leaders meet, the one with the older term yields (fencing: a partitioned old
//!    leader never overrules the cluster that elected a successor); with equal terms the higher
//!    id yields. A leader that yields starts its stability window again, so it first follows —
//!    and reconciles its content into — the surviving cluster before it may take over again.
//! 5. A follower follows the alive claimant with the highest term (then the lowest id).
//! 6. A draining member (about to stop, or taken out by an operator) is not eligible: it stops
//!    leading at once and says so in its heartbeats, and the others elect among themselves as if
//!    it were not there (so the next eligible id leads, with a new term, within a heartbeat); it
//!    follows whoever leads. Back from draining, it counts as newly arrived (rule 3).
//! 7. A term has one leader. A server that rules 2 or 3 make leader first *stands* for a new
//!    term: it asks every alive member and every boot or remembered address it has not heard from
//!    (a server that may be starting right now), and leads once each has answered without
//!    objection or failed to answer. A server grants each term once (to the first candidate it
//!    hears, itself included) and adopts that term before it answers, so two servers that can
//!    reach each other never lead the same term: when two stand for one term at once, both are
//!    refused, the higher id gives way (rule 2) and the lower one stands again with the next term.
//!    Servers that cannot reach each other at all (a partition) elect on each side, as in rule 4.
//! 8. A leadership is *lone* while no other member has granted its term or followed it (a server
//!    cut off from the others that stood and "won" with nobody answering). When leaders meet, or
//!    a follower chooses among claimants, a leadership some member backs outranks a lone one
//!    whatever their terms, so a server returning from a partition never displaces the leader
//!    the others follow (and the saves that leader committed); rule 4 decides between leaderships
//!    of the same kind.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Milliseconds on the runtime's monotonic clock.
pub type Millis = u64;

/// A server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    /// Base URL (with the context path, ending in `/`).
    pub url: String,
}

/// What a heartbeat carries, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub from: Node,
    /// The sender's current term.
    pub term: u64,
    /// `Some(term)` when the sender claims leadership, with the term of its leadership.
    pub leading: Option<u64>,
    /// The leader the sender follows, if any.
    pub leader: Option<Node>,
    /// Members the sender knows to be alive.
    pub members: Vec<Node>,
    /// The sender is draining: it takes no part in elections (absent from earlier versions).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// The sender grants terms (rule 7; absent from earlier versions, which do not).
    #[serde(default)]
    pub votes: bool,
    /// The term the sender stands for (rule 7; absent from earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing: Option<u64>,
    /// The newest term the sender granted, and to whom (rule 7; absent from earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote: Option<Vote>,
    /// The sender's leadership is lone (rule 8; absent from earlier versions, whose leaderships
    /// count as backed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lone: bool,
}

/// A term granted to a candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub term: u64,
    pub id: String,
}

/// Election timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Millis,
    pub timeout: Millis,
    pub stability: Millis,
}

/// What the engine asks its runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send this server's heartbeat to `url`.
    Send { url: String },
    /// This server now leads, with `term`.
    Lead { term: u64 },
    /// This server stands for, or granted, `term`: persist it before any answer goes out.
    Adopt { term: u64 },
    /// This server follows `leader` (None: no leader known yet).
    Follow { leader: Option<Node> },
    /// Persist these members' URLs (to probe after a restart).
    Remember { urls: Vec<String> },
}

/// What happens to the engine.
#[derive(Debug, Clone)]
pub enum Event {
    /// Time passes; `term` is the server's current term (it may have learnt newer terms elsewhere).
    Tick { now: Millis, term: u64 },
    /// This server starts (`true`) or stops (`false`) draining.
    Draining { draining: bool, now: Millis },
    /// A heartbeat another server sent us.
    Heard { beat: Beat, now: Millis },
    /// The answer from `url` to our heartbeat, which stood for `standing`.
    Answered {
        url: String,
        standing: Option<u64>,
        beat: Beat,
        now: Millis,
    },
    /// Our heartbeat to `url`, which stood for `standing`, got no answer.
    Unanswered {
        url: String,
        standing: Option<u64>,
        now: Millis,
    },
}

/// This server's candidacy (rule 7).
#[derive(Debug, Clone)]
struct Candidacy {
    term: u64,
    since: Millis,
    /// Addresses that have neither answered nor failed yet.
    waiting: BTreeSet<String>,
    /// Some member answered without objection (rule 8).
    granted: bool,
}

#[derive(Debug, Clone)]
struct MemberState {
    url: String,
    last_heard: Option<Millis>,
    alive_since: Option<Millis>,
    /// The term of its leadership when it last claimed to lead.
    claims: Option<u64>,
    /// That leadership was lone (rule 8).
    lone: bool,
    /// It said it is draining (rule 6).
    draining: bool,
}

/// The election state of one server.
#[derive(Debug, Clone)]
pub struct Engine {
    me: Node,
    timing: Timing,
    /// Since when this server counts as stable (start, or last time it was deposed).
    stable_since: Millis,
    others: BTreeMap<String, MemberState>,
    /// URLs to probe even when no member lives there (boot servers, remembered members).
    probes: BTreeSet<String>,
    max_term: u64,
    /// The term of this server's leadership, when it leads.
    leading: Option<u64>,
    /// That leadership is lone (rule 8).
    lone: bool,
    following: Option<Node>,
    remembered: Vec<String>,
    /// The time of the last tick, and since when ticks have come without a stall.
    last_tick: Option<Millis>,
    asking_since: Option<Millis>,
    /// This server is draining (rule 6).
    draining: bool,
    /// The term this server stands for (rule 7).
    standing: Option<Candidacy>,
    /// The newest term this server granted (rule 7).
    vote: Option<Vote>,
}

impl Engine {
    /// A new engine at time `now`; `probes` are the boot servers and remembered members.
    pub fn new(
        me: Node,
        timing: Timing,
        now: Millis,
        term: u64,
        probes: impl IntoIterator<Item = String>,
    ) -> Engine {
        let probes = probes.into_iter().filter(|u| *u != me.url).collect();
        Engine {
            me,
            timing,
            stable_since: now,
            others: BTreeMap::new(),
            probes,
            max_term: term,
            leading: None,
            lone: false,
            following: None,
            remembered: Vec::new(),
            last_tick: None,
            asking_since: None,
            draining: false,
            standing: None,
            vote: None,
        }
    }

    pub fn me(&self) -> &Node {
        &self.me
    }

    /// The term of this server's leadership, if it leads.
    pub fn leading(&self) -> Option<u64> {
        self.leading
    }

    /// The leader this server follows.
    pub fn following(&self) -> Option<&Node> {
        self.following.as_ref()
    }

    fn alive(&self, p: &MemberState, now: Millis) -> bool {
        p.last_heard.is_some_and(|t| {
            let silent_from = t.max(self.asking_since.unwrap_or(t));
            now.saturating_sub(silent_from) <= self.timing.timeout
        })
    }

    /// Alive and not draining: a member elections count with (rule 6).
    fn eligible(&self, p: &MemberState, now: Millis) -> bool {
        self.alive(p, now) && !p.draining
    }

    fn stable(&self, p: &MemberState, now: Millis) -> bool {
        self.eligible(p, now)
            && p.alive_since
                .is_some_and(|s| now.saturating_sub(s) >= self.timing.stability)
    }

    fn me_stable(&self, now: Millis) -> bool {
        now.saturating_sub(self.stable_since) >= self.timing.stability
    }

    /// Alive members (this server included), in id order.
    pub fn alive_members(&self, now: Millis) -> Vec<Node> {
        let mut v: Vec<Node> = self
            .others
            .iter()
            .filter(|(_, p)| self.alive(p, now))
            .map(|(id, p)| Node {
                id: id.clone(),
                url: p.url.clone(),
            })
            .collect();
        v.push(self.me.clone());
        v.sort();
        v
    }

    /// Every member this server knows, with when it last heard from it.
    pub fn known(&self) -> Vec<(Node, Option<Millis>)> {
        self.others
            .iter()
            .map(|(id, p)| {
                (
                    Node {
                        id: id.clone(),
                        url: p.url.clone(),
                    },
                    p.last_heard,
                )
            })
            .collect()
    }

    /// This server's heartbeat.
    pub fn beat(&self, now: Millis) -> Beat {
        Beat {
            from: self.me.clone(),
            term: self.max_term,
            leading: self.leading,
            leader: if self.leading.is_some() {
                Some(self.me.clone())
            } else {
                self.following.clone()
            },
            members: self.alive_members(now),
            draining: self.draining,
            votes: true,
            standing: self.standing.as_ref().map(|c| c.term),
            vote: self.vote.clone(),
            lone: self.leading.is_some() && self.lone,
        }
    }

    /// Whether this server's leadership is lone (rule 8).
    pub fn lone(&self) -> bool {
        self.leading.is_some() && self.lone
    }

    /// Applies an event and answers the commands it leads to.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        let now = match event {
            Event::Tick { now, term } => {
                if self
                    .last_tick
                    .is_none_or(|t| now.saturating_sub(t) > self.timing.timeout)
                {
                    self.asking_since = Some(now);
                }
                self.last_tick = Some(now);
                self.max_term = self.max_term.max(term);
                let mut urls: BTreeSet<String> =
                    self.others.values().map(|p| p.url.clone()).collect();
                urls.extend(self.probes.iter().cloned());
                out.extend(urls.into_iter().map(|url| Command::Send { url }));
                now
            }
            Event::Heard { beat, now } => {
                if let Some(term) = self.heard(beat, now) {
                    out.push(Command::Adopt { term });
                }
                now
            }
            Event::Answered {
                url,
                standing,
                beat,
                now,
            } => {
                let objects = self.objects(&beat, standing);
                if let Some(term) = self.heard(beat, now) {
                    out.push(Command::Adopt { term });
                }
                self.counted(&url, standing, objects, true);
                now
            }
            Event::Unanswered { url, standing, now } => {
                self.counted(&url, standing, false, false);
                now
            }
            Event::Draining { draining, now } => {
                if self.draining && !draining {
                    // Back: newly arrived for the stability window (rule 3).
                    self.stable_since = now;
                }
                self.draining = draining;
                now
            }
        };
        self.decide(now, &mut out);
        let mut sent = BTreeSet::new();
        out.retain(|c| match c {
            Command::Send { url } => sent.insert(url.clone()),
            _ => true,
        });
        let alive: Vec<String> = self
            .alive_members(now)
            .into_iter()
            .filter(|n| n.id != self.me.id)
            .map(|n| n.url)
            .collect();
        let mut remember = self.remembered.clone();
        for u in &alive {
            if !remember.contains(u) {
                remember.push(u.clone());
            }
        }
        if remember != self.remembered {
            remember.sort();
            self.remembered = remember.clone();
            self.probes.extend(remember.iter().cloned());
            out.push(Command::Remember { urls: remember });
        }
        out
    }

    /// Whether an answer to our candidacy for `standing` objects to it (rule 7): the member
    /// leads that term or a newer one, knows a newer term, or (if it grants terms at all; earlier
    /// versions do not) did not grant that term to this server.
    fn objects(&self, beat: &Beat, standing: Option<u64>) -> bool {
        let Some(t) = standing else {
            return false;
        };
        if beat.term > t || beat.leading.is_some_and(|l| l >= t) {
            return true;
        }
        beat.votes
            && beat.vote.as_ref()
                != Some(&Vote {
                    term: t,
                    id: self.me.id.clone(),
                })
    }

    /// Counts an answer (or the lack of one, `answered` false) to a heartbeat that stood for
    /// `standing`: an objection ends the candidacy; an answer or failure without one is one
    /// fewer to wait for, and an answer grants the term (rule 8).
    fn counted(&mut self, url: &str, standing: Option<u64>, objects: bool, answered: bool) {
        let Some(c) = self.standing.as_mut() else {
            return;
        };
        if standing != Some(c.term) {
            return;
        }
        if objects {
            self.standing = None;
        } else {
            c.waiting.remove(url);
            c.granted |= answered;
        }
    }

    /// Learns from a heartbeat; answers the term granted to its sender, if it stands for a term
    /// newer than any this server knows (rule 7).
    fn heard(&mut self, beat: Beat, now: Millis) -> Option<u64> {
        if beat.from.id == self.me.id {
            // Our own bind URL is in the boot list: nothing to learn from ourselves.
            self.max_term = self.max_term.max(beat.term);
            self.probes.remove(&beat.from.url);
            return None;
        }
        let granted = beat.standing.filter(|&t| t > self.max_term);
        self.max_term = self.max_term.max(beat.term).max(beat.leading.unwrap_or(0));
        if self.leading.is_some() && beat.leader.as_ref().is_some_and(|l| l.id == self.me.id) {
            // A member follows this leadership: it is backed (rule 8).
            self.lone = false;
        }
        if let Some(t) = granted {
            self.vote = Some(Vote {
                term: t,
                id: beat.from.id.clone(),
            });
            self.standing = None;
        }
        let alive_before = self
            .others
            .get(&beat.from.id)
            .is_some_and(|p| self.alive(p, now));
        let p = self
            .others
            .entry(beat.from.id.clone())
            .or_insert(MemberState {
                url: beat.from.url.clone(),
                last_heard: None,
                alive_since: None,
                claims: None,
                lone: false,
                draining: false,
            });
        p.url = beat.from.url.clone();
        if !alive_before {
            p.alive_since = Some(now);
        }
        p.last_heard = Some(now);
        p.claims = beat.leading;
        p.lone = beat.lone;
        if p.draining && !beat.draining {
            p.alive_since = Some(now);
        }
        p.draining = beat.draining;
        for m in beat.members {
            if m.id != self.me.id && !self.others.contains_key(&m.id) {
                self.others.insert(
                    m.id.clone(),
                    MemberState {
                        url: m.url,
                        last_heard: None,
                        alive_since: None,
                        claims: None,
                        lone: false,
                        draining: false,
                    },
                );
            }
        }
        granted
    }

    /// The alive claimant other than this server that ranks highest (see [`outranks`]).
    fn top_claimant(&self, now: Millis) -> Option<Claim> {
        self.others
            .iter()
            .filter(|(_, p)| self.alive(p, now))
            .filter_map(|(id, p)| {
                p.claims.map(|term| Claim {
                    lone: p.lone,
                    term,
                    node: Node {
                        id: id.clone(),
                        url: p.url.clone(),
                    },
                })
            })
            .reduce(|best, c| if outranks(&c, &best) { c } else { best })
    }

    /// Rules 2 and 3 make this server leader: it stands for a new term (rule 7), and leads once
    /// every address it asked has answered without objection or failed to answer.
    fn stand(&mut self, now: Millis, out: &mut Vec<Command>) {
        if self
            .standing
            .as_ref()
            .is_some_and(|c| c.term < self.max_term)
        {
            self.standing = None; // a newer term appeared meanwhile: stand again
        }
        if self.standing.is_none() {
            let term = self.max_term + 1;
            self.max_term = term;
            self.vote = Some(Vote {
                term,
                id: self.me.id.clone(),
            });
            let known: BTreeSet<&str> = self.others.values().map(|p| p.url.as_str()).collect();
            let mut waiting: BTreeSet<String> = self
                .others
                .values()
                .filter(|p| self.alive(p, now))
                .map(|p| p.url.clone())
                .collect();
            waiting.extend(
                self.probes
                    .iter()
                    .filter(|u| !known.contains(u.as_str()))
                    .cloned(),
            );
            out.push(Command::Adopt { term });
            out.extend(waiting.iter().map(|url| Command::Send { url: url.clone() }));
            self.standing = Some(Candidacy {
                term,
                since: now,
                waiting,
                granted: false,
            });
        }
        let Some(c) = &self.standing else {
            return;
        };
        let overdue = now.saturating_sub(c.since) > 2 * self.timing.timeout;
        if c.waiting.is_empty() || overdue {
            let term = c.term;
            self.lone = !c.granted;
            self.standing = None;
            self.leading = Some(term);
            self.following = None;
            out.push(Command::Lead { term });
        }
    }

    fn follow(&mut self, leader: Option<Node>, out: &mut Vec<Command>) {
        self.standing = None;
        if self.following != leader || self.leading.is_some() {
            self.leading = None;
            self.following = leader.clone();
            out.push(Command::Follow { leader });
        }
    }

    fn decide(&mut self, now: Millis, out: &mut Vec<Command>) {
        let top = self.top_claimant(now);
        if self.draining {
            // Rule 6: no part in elections; follow whoever leads.
            self.follow(top.map(|c| c.node), out);
            return;
        }
        if let Some(term) = self.leading {
            // Rules 4 and 8: two leaders meet.
            let mine = Claim {
                lone: self.lone,
                term,
                node: self.me.clone(),
            };
            if let Some(other) = &top
                && outranks(other, &mine)
            {
                self.stable_since = now;
                self.follow(Some(other.node.clone()), out);
                return;
            }
            // Rule 3: a stable lower id pre-empts.
            let lower_stable = self
                .others
                .iter()
                .any(|(id, p)| *id < self.me.id && self.stable(p, now));
            if lower_stable {
                self.follow(None, out);
            }
            return;
        }
        match top.map(|c| c.node) {
            Some(current) => {
                // Rule 3 from the lower id's side: take over once stable, unless a stable id lower
                // still is alive (it takes over instead).
                let lower_alive = self
                    .others
                    .iter()
                    .any(|(id, p)| *id < self.me.id && self.stable(p, now));
                if self.me.id < current.id && self.me_stable(now) && !lower_alive {
                    self.stand(now, out);
                } else {
                    self.follow(Some(current), out);
                }
            }
            None => {
                // Rule 2: nobody leads; the lowest alive id claims at once.
                let lowest_alive = self
                    .others
                    .iter()
                    .filter(|(_, p)| self.eligible(p, now))
                    .all(|(id, _)| self.me.id < *id);
                if lowest_alive {
                    self.stand(now, out);
                } else {
                    self.follow(None, out);
                }
            }
        }
    }
}

/// A claim to lead: whether it is lone (rule 8), its term, and who claims.
#[derive(Debug, Clone)]
struct Claim {
    lone: bool,
    term: u64,
    node: Node,
}

/// Whether claim `a` outranks claim `b`: a backed leadership outranks a lone one (rule 8), then
/// the newer term (rule 4), then the lower id.
fn outranks(a: &Claim, b: &Claim) -> bool {
    (!a.lone, a.term, std::cmp::Reverse(&a.node.id))
        > (!b.lone, b.term, std::cmp::Reverse(&b.node.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        heartbeat: 100,
        timeout: 300,
        stability: 1000,
    };

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            url: format!("http://{id}/"),
        }
    }

    fn beat(id: &str, term: u64, leading: bool) -> Beat {
        Beat {
            from: node(id),
            term,
            leading: leading.then_some(term),
            leader: None,
            members: vec![],
            draining: false,
            votes: false,
            standing: None,
            vote: None,
            lone: false,
        }
    }

    /// The beat of a leader whose leadership nobody granted or follows (rule 8).
    fn lone_beat(id: &str, term: u64) -> Beat {
        Beat {
            lone: true,
            ..beat(id, term, true)
        }
    }

    fn leads(cmds: &[Command]) -> Option<u64> {
        cmds.iter().find_map(|c| match c {
            Command::Lead { term } => Some(*term),
            _ => None,
        })
    }

    /// Plays the runtime: each heartbeat that `cmds` ask `e` to send is answered by `answer`
    /// (given the address and the beat sent) or goes unanswered (`None`), and so on for the
    /// heartbeats those answers lead to; answers every command, `cmds` first.
    fn deliver(
        e: &mut Engine,
        cmds: Vec<Command>,
        now: Millis,
        answer: &mut dyn FnMut(&str, &Beat) -> Option<Beat>,
    ) -> Vec<Command> {
        let mut all = cmds.clone();
        let mut pending = cmds;
        for _ in 0..10 {
            let sends: Vec<String> = pending
                .iter()
                .filter_map(|c| match c {
                    Command::Send { url } => Some(url.clone()),
                    _ => None,
                })
                .collect();
            if sends.is_empty() {
                break;
            }
            pending = Vec::new();
            let sent = e.beat(now);
            for url in sends {
                let standing = sent.standing;
                let event = match answer(&url, &sent) {
                    Some(beat) => Event::Answered {
                        url,
                        standing,
                        beat,
                        now,
                    },
                    None => Event::Unanswered { url, standing, now },
                };
                pending.extend(e.handle(event));
            }
            all.extend(pending.iter().cloned());
        }
        all
    }

    /// Answers as the engines `peers` would (they hear the beat first); others do not answer.
    fn engines<'a>(
        peers: &'a mut [&mut Engine],
        now: Millis,
    ) -> impl FnMut(&str, &Beat) -> Option<Beat> + 'a {
        move |url, sent| {
            let p = peers.iter_mut().find(|p| p.me().url == url)?;
            p.handle(Event::Heard {
                beat: sent.clone(),
                now,
            });
            Some(p.beat(now))
        }
    }

    fn follows(cmds: &[Command]) -> Option<Option<Node>> {
        cmds.iter().find_map(|c| match c {
            Command::Follow { leader } => Some(leader.clone()),
            _ => None,
        })
    }

    #[test]
    fn a_lone_server_leads_with_a_new_term_once_its_boot_servers_go_unanswered() {
        let mut e = Engine::new(node("b"), T, 0, 4, vec!["http://a/".to_string()]);
        let cmds = e.handle(Event::Tick { now: 0, term: 4 });
        assert!(
            cmds.contains(&Command::Send {
                url: "http://a/".into()
            }),
            "probes the boot servers: {cmds:?}"
        );
        assert!(cmds.contains(&Command::Adopt { term: 5 }), "{cmds:?}");
        assert_eq!(leads(&cmds), None, "not before a had its chance to object");
        let cmds = e.handle(Event::Unanswered {
            url: "http://a/".into(),
            standing: Some(5),
            now: 20,
        });
        assert_eq!(leads(&cmds), Some(5));
        assert_eq!(e.leading(), Some(5));
        // With nobody to ask, at once.
        let mut e = Engine::new(node("b"), T, 0, 0, vec![]);
        assert_eq!(leads(&e.handle(Event::Tick { now: 0, term: 0 })), Some(1));
    }

    #[test]
    fn a_joiner_follows_the_leader_it_hears() {
        let mut e = Engine::new(node("c"), T, 0, 0, vec![]);
        let cmds = e.handle(Event::Heard {
            beat: beat("a", 3, true),
            now: 0,
        });
        assert_eq!(follows(&cmds), Some(Some(node("a"))));
        assert_eq!(
            e.handle(Event::Tick { now: 50, term: 3 })
                .iter()
                .filter(|c| matches!(c, Command::Follow { .. }))
                .count(),
            0,
            "no churn"
        );
        assert_eq!(e.beat(50).leader, Some(node("a")));
    }

    #[test]
    fn a_lost_leader_is_replaced_by_the_lowest_alive_id() {
        let mut b = Engine::new(node("b"), T, 0, 0, vec![]);
        b.handle(Event::Heard {
            beat: beat("a", 3, true),
            now: 0,
        });
        b.handle(Event::Heard {
            beat: beat("c", 3, false),
            now: 0,
        });
        b.handle(Event::Tick { now: 0, term: 3 });
        // a stops answering; c keeps answering.
        b.handle(Event::Tick { now: 200, term: 3 });
        b.handle(Event::Heard {
            beat: beat("c", 3, false),
            now: 250,
        });
        let cmds = b.handle(Event::Tick { now: 350, term: 3 });
        let cmds = deliver(&mut b, cmds, 350, &mut |url, _| {
            (url == "http://c/").then(|| beat("c", 3, false))
        });
        assert_eq!(
            leads(&cmds),
            Some(4),
            "b is the lowest alive id once a times out: {cmds:?}"
        );
        // c, meanwhile, waits for the lower id.
        let mut c = Engine::new(node("c"), T, 0, 0, vec![]);
        c.handle(Event::Heard {
            beat: beat("a", 3, true),
            now: 0,
        });
        c.handle(Event::Tick { now: 0, term: 3 });
        c.handle(Event::Tick { now: 200, term: 3 });
        c.handle(Event::Heard {
            beat: beat("b", 3, false),
            now: 300,
        });
        let cmds = c.handle(Event::Tick { now: 350, term: 3 });
        assert_eq!(leads(&cmds), None);
        assert_eq!(follows(&cmds), Some(None), "no leader until b claims");
        let cmds = c.handle(Event::Heard {
            beat: beat("b", 4, true),
            now: 360,
        });
        assert_eq!(follows(&cmds), Some(Some(node("b"))));
    }

    #[test]
    fn a_returning_lower_id_takes_over_only_after_the_stability_window() {
        let mut a = Engine::new(node("a"), T, 10_000, 5, vec![]);
        let cmds = a.handle(Event::Heard {
            beat: beat("b", 5, true),
            now: 10_000,
        });
        assert_eq!(
            follows(&cmds),
            Some(Some(node("b"))),
            "first it follows the stable leader"
        );
        for now in (10_100..11_000).step_by(100) {
            let mut cmds = a.handle(Event::Heard {
                beat: beat("b", 5, true),
                now,
            });
            cmds.extend(a.handle(Event::Tick { now, term: 5 }));
            assert_eq!(leads(&cmds), None, "not before the window ({now})");
        }
        let mut cmds = a.handle(Event::Heard {
            beat: beat("b", 5, true),
            now: 11_000,
        });
        let tick = a.handle(Event::Tick {
            now: 11_000,
            term: 5,
        });
        cmds.extend(deliver(&mut a, tick, 11_000, &mut |_, _| {
            Some(beat("b", 5, true))
        }));
        assert_eq!(leads(&cmds), Some(6));
        // b sees a claim a newer term and yields.
        let mut b = Engine::new(node("b"), T, 0, 5, vec![]);
        b.handle(Event::Tick { now: 0, term: 5 });
        assert_eq!(b.leading(), Some(6));
        let cmds = b.handle(Event::Heard {
            beat: beat("a", 7, true),
            now: 100,
        });
        assert_eq!(follows(&cmds), Some(Some(node("a"))));
    }

    #[test]
    fn a_flapping_lower_id_never_preempts() {
        let mut b = Engine::new(node("b"), T, 0, 0, vec![]);
        b.handle(Event::Tick { now: 0, term: 0 });
        assert!(b.leading().is_some());
        let mut now = 0;
        for _ in 0..10 {
            // a answers briefly, then vanishes past the timeout, again and again.
            b.handle(Event::Heard {
                beat: beat("a", 1, false),
                now: now + 100,
            });
            for _ in 0..2 {
                now += 300;
                let cmds = b.handle(Event::Tick { now, term: 1 });
                assert!(
                    b.leading().is_some() && follows(&cmds).is_none(),
                    "b stays leader: {cmds:?}"
                );
            }
        }
    }

    #[test]
    fn when_two_leaders_meet_the_older_term_yields_then_ties_go_to_the_lower_id() {
        // A partitioned old leader (a, term 3) meets the new leader (b, term 4): a yields even
        // though its id is lower, and must be stable again before it takes over.
        let mut a = Engine::new(node("a"), T, 0, 2, vec![]);
        a.handle(Event::Tick { now: 0, term: 2 });
        assert_eq!(a.leading(), Some(3));
        let cmds = a.handle(Event::Heard {
            beat: beat("b", 4, true),
            now: 5_000,
        });
        assert_eq!(follows(&cmds), Some(Some(node("b"))));
        let mut cmds = a.handle(Event::Heard {
            beat: beat("b", 4, true),
            now: 5_500,
        });
        cmds.extend(a.handle(Event::Tick {
            now: 5_500,
            term: 4,
        }));
        assert_eq!(leads(&cmds), None, "still inside its new window");
        let mut cmds = a.handle(Event::Heard {
            beat: beat("b", 4, true),
            now: 6_000,
        });
        let tick = a.handle(Event::Tick {
            now: 6_000,
            term: 4,
        });
        cmds.extend(deliver(&mut a, tick, 6_000, &mut |_, _| {
            Some(beat("b", 4, true))
        }));
        assert_eq!(leads(&cmds), Some(5));

        // Equal terms (both led alone): the higher id yields.
        let mut c = Engine::new(node("c"), T, 0, 6, vec![]);
        c.handle(Event::Tick { now: 0, term: 6 });
        assert_eq!(c.leading(), Some(7));
        assert!(c.lone(), "nobody granted c's term");
        let cmds = c.handle(Event::Heard {
            beat: lone_beat("b", 7),
            now: 10,
        });
        assert_eq!(follows(&cmds), Some(Some(node("b"))));
        let mut b = Engine::new(node("b"), T, 0, 6, vec![]);
        b.handle(Event::Tick { now: 0, term: 6 });
        let cmds = b.handle(Event::Heard {
            beat: lone_beat("c", 7),
            now: 10,
        });
        assert!(
            follows(&cmds).is_none() && b.leading() == Some(7),
            "b keeps leading: {cmds:?}"
        );
    }

    #[test]
    fn a_slow_start_or_a_stall_is_not_taken_for_the_leaders_death() {
        // b joins: the leader a answers, then b's first tick comes long after (a slow start).
        let mut b = Engine::new(node("b"), T, 0, 1, vec!["http://a/".to_string()]);
        b.handle(Event::Heard {
            beat: beat("a", 1, true),
            now: 0,
        });
        let cmds = b.handle(Event::Tick {
            now: 5_000,
            term: 1,
        });
        assert_eq!(leads(&cmds), None, "{cmds:?}");
        assert_eq!(b.following(), Some(&node("a")));
        // a answers again; then b stalls (no ticks for longer than the timeout) and wakes.
        b.handle(Event::Heard {
            beat: beat("a", 1, true),
            now: 5_050,
        });
        b.handle(Event::Tick {
            now: 5_100,
            term: 1,
        });
        let cmds = b.handle(Event::Tick {
            now: 9_000,
            term: 1,
        });
        assert_eq!(leads(&cmds), None, "{cmds:?}");
        // Asked and silent for longer than the timeout: a is dead and b claims.
        b.handle(Event::Tick {
            now: 9_200,
            term: 1,
        });
        let cmds = b.handle(Event::Tick {
            now: 9_301,
            term: 1,
        });
        assert_eq!(leads(&cmds), Some(2), "{cmds:?}");
    }

    #[test]
    fn members_are_learnt_from_heartbeats_and_remembered() {
        let mut c = Engine::new(node("c"), T, 0, 0, vec!["http://a/".to_string()]);
        let mut b = beat("a", 1, true);
        b.members = vec![node("a"), node("b"), node("c")];
        let cmds = c.handle(Event::Heard { beat: b, now: 0 });
        assert!(
            cmds.contains(&Command::Remember {
                urls: vec!["http://a/".into()]
            }),
            "{cmds:?}"
        );
        let sends: Vec<_> = c
            .handle(Event::Tick { now: 10, term: 1 })
            .into_iter()
            .filter(|x| matches!(x, Command::Send { .. }))
            .collect();
        assert!(
            sends.contains(&Command::Send {
                url: "http://b/".into()
            }),
            "b was learnt from a: {sends:?}"
        );
    }

    /// `a` ticks at `now` (knowing `term`) and sends its heartbeats, which `b` answers.
    fn tick_and_meet(a: &mut Engine, b: &mut Engine, now: Millis, term: u64) {
        let cmds = a.handle(Event::Tick { now, term });
        deliver(a, cmds, now, &mut engines(&mut [b], now));
    }

    #[test]
    fn a_draining_leader_hands_over_at_once_and_is_not_elected_while_it_drains() {
        let mut a = Engine::new(node("a"), T, 0, 0, vec![]);
        let mut b = Engine::new(node("b"), T, 0, 0, vec![]);
        a.handle(Event::Tick { now: 0, term: 0 });
        assert_eq!(a.leading(), Some(1));
        b.handle(Event::Heard {
            beat: a.beat(0),
            now: 0,
        });
        assert_eq!(b.following(), Some(&node("a")));
        a.handle(Event::Heard {
            beat: b.beat(0),
            now: 0,
        });

        // a drains: it stops leading at once, and its next beat makes b lead with a new term.
        let cmds = a.handle(Event::Draining {
            draining: true,
            now: 50,
        });
        assert_eq!(follows(&cmds), Some(None));
        assert_eq!(a.leading(), None);
        let beat = a.beat(50);
        assert!(beat.draining && beat.leading.is_none());
        let cmds = b.handle(Event::Heard { beat, now: 50 });
        let cmds = deliver(&mut b, cmds, 50, &mut engines(&mut [&mut a], 50));
        assert_eq!(
            leads(&cmds),
            Some(2),
            "the next eligible id leads, newer term"
        );
        // a follows b, and stays a follower while it drains, however low its id.
        let cmds = a.handle(Event::Heard {
            beat: b.beat(60),
            now: 60,
        });
        assert_eq!(follows(&cmds), Some(Some(node("b"))));
        for now in [100, 2_000, 5_000] {
            tick_and_meet(&mut a, &mut b, now, 2);
            assert_eq!(a.leading(), None, "no leadership while draining");
            assert_eq!(b.leading(), Some(2), "no churn on the new leader");
        }

        // Back from draining: a counts as newly arrived, and takes over only once stable.
        a.handle(Event::Draining {
            draining: false,
            now: 5_100,
        });
        b.handle(Event::Heard {
            beat: a.beat(5_100),
            now: 5_100,
        });
        a.handle(Event::Tick {
            now: 5_200,
            term: 2,
        });
        assert_eq!(a.leading(), None, "not before its stability window");
        let mut now = 5_200;
        while now < 5_100 + T.stability + 200 {
            now += 100;
            tick_and_meet(&mut a, &mut b, now, 2);
        }
        assert!(
            a.leading().is_some_and(|t| t > 2),
            "the lowest id leads again"
        );
    }

    #[test]
    fn two_servers_standing_for_one_term_are_both_refused_and_the_lower_id_takes_the_next() {
        let mut a = Engine::new(node("a"), T, 0, 0, vec!["http://b/".to_string()]);
        let mut b = Engine::new(node("b"), T, 0, 0, vec!["http://a/".to_string()]);
        let ta = a.handle(Event::Tick { now: 0, term: 0 });
        let tb = b.handle(Event::Tick { now: 0, term: 0 });
        assert!(
            ta.contains(&Command::Adopt { term: 1 }) && tb.contains(&Command::Adopt { term: 1 })
        );
        assert_eq!(
            (leads(&ta), leads(&tb)),
            (None, None),
            "each waits for the other"
        );
        // The two heartbeats cross: each hears the other stand before either answer arrives.
        let (sa, sb) = (a.beat(0), b.beat(0));
        assert_eq!((sa.standing, sb.standing), (Some(1), Some(1)));
        let heard_a = b.handle(Event::Heard { beat: sa, now: 1 });
        let heard_b = a.handle(Event::Heard { beat: sb, now: 1 });
        assert!(
            !heard_a
                .iter()
                .chain(&heard_b)
                .any(|c| matches!(c, Command::Adopt { .. })),
            "a term is granted once: each already stands for it"
        );
        let ra = a.handle(Event::Answered {
            url: "http://b/".into(),
            standing: Some(1),
            beat: b.beat(2),
            now: 2,
        });
        let rb = b.handle(Event::Answered {
            url: "http://a/".into(),
            standing: Some(1),
            beat: a.beat(2),
            now: 2,
        });
        assert_eq!((leads(&ra), leads(&rb)), (None, None), "both refused");
        assert_eq!(b.beat(2).standing, None, "b gave way to the lower id");
        assert!(
            ra.contains(&Command::Adopt { term: 2 }),
            "a stands again: {ra:?}"
        );
        let ra = deliver(&mut a, ra, 3, &mut engines(&mut [&mut b], 3));
        assert_eq!(leads(&ra), Some(2));
        assert_eq!(b.leading(), None);
        assert_eq!(
            b.beat(3).vote,
            Some(Vote {
                term: 2,
                id: "a".into()
            })
        );
    }

    #[test]
    fn a_granted_term_is_adopted_before_the_answer_and_granted_to_nobody_else() {
        let mut c = Engine::new(node("c"), T, 0, 0, vec![]);
        let mut a = beat("a", 3, false);
        a.standing = Some(3);
        let cmds = c.handle(Event::Heard { beat: a, now: 0 });
        assert!(cmds.contains(&Command::Adopt { term: 3 }), "{cmds:?}");
        let mut b = beat("b", 3, false);
        b.standing = Some(3);
        let cmds = c.handle(Event::Heard { beat: b, now: 1 });
        assert!(!cmds.iter().any(|c| matches!(c, Command::Adopt { .. })));
        let answer = c.beat(1);
        assert_eq!(
            answer.vote,
            Some(Vote {
                term: 3,
                id: "a".into()
            })
        );
        // b counts that answer as an objection; a as a grant.
        let eb = Engine::new(node("b"), T, 0, 2, vec![]);
        let ea = Engine::new(node("a"), T, 0, 2, vec![]);
        assert!(eb.objects(&answer, Some(3)));
        assert!(!ea.objects(&answer, Some(3)));
        // An earlier version (which grants nothing) objects only by leading or knowing newer.
        let mut old = beat("c", 3, false);
        assert!(!ea.objects(&old, Some(3)));
        old.term = 4;
        assert!(ea.objects(&old, Some(3)));
    }

    #[test]
    fn a_candidacy_whose_answers_never_come_leads_after_twice_the_timeout() {
        let mut e = Engine::new(node("a"), T, 0, 0, vec!["http://b/".to_string()]);
        e.handle(Event::Tick { now: 0, term: 0 });
        assert_eq!(e.leading(), None);
        let cmds = e.handle(Event::Tick {
            now: 2 * T.timeout + 1,
            term: 1,
        });
        assert_eq!(leads(&cmds), Some(1), "{cmds:?}");
    }
    #[test]
    fn a_leadership_nobody_backs_never_displaces_one_the_others_follow() {
        // a leads term 3, granted by b, which follows it: a is backed.
        let mut a = Engine::new(node("a"), T, 0, 2, vec!["http://b/".to_string()]);
        let tick = a.handle(Event::Tick { now: 0, term: 2 });
        let cmds = deliver(&mut a, tick, 0, &mut |_, sent| {
            Some(Beat {
                vote: sent.standing.map(|term| Vote {
                    term,
                    id: "a".into(),
                }),
                votes: true,
                ..beat("b", sent.standing.unwrap_or(2), false)
            })
        });
        assert_eq!(leads(&cmds), Some(3));
        assert!(!a.lone(), "b granted the term");
        // c, cut off, stood alone and leads the newer term 7 that nobody granted.
        let mut c = Engine::new(node("c"), T, 0, 6, vec![]);
        c.handle(Event::Tick { now: 0, term: 6 });
        assert_eq!(c.leading(), Some(7));
        assert!(c.lone());
        assert!(c.beat(0).lone, "its heartbeats say so");
        // The partition heals: a keeps leading despite the newer term, and c yields to a.
        let cmds = a.handle(Event::Heard {
            beat: c.beat(10),
            now: 10,
        });
        assert!(
            follows(&cmds).is_none() && a.leading() == Some(3),
            "{cmds:?}"
        );
        let cmds = c.handle(Event::Heard {
            beat: a.beat(10),
            now: 10,
        });
        assert_eq!(follows(&cmds), Some(Some(node("a"))));
        // A follower that hears both claims follows the backed one.
        let mut b = Engine::new(node("b"), T, 0, 3, vec![]);
        b.handle(Event::Heard {
            beat: lone_beat("c", 7),
            now: 0,
        });
        let cmds = b.handle(Event::Heard {
            beat: beat("a", 3, true),
            now: 0,
        });
        assert_eq!(follows(&cmds), Some(Some(node("a"))), "{cmds:?}");
        // A lone leader that a member then follows is backed from then on.
        let mut d = Engine::new(node("d"), T, 0, 0, vec![]);
        d.handle(Event::Tick { now: 0, term: 0 });
        assert!(d.lone());
        d.handle(Event::Heard {
            beat: Beat {
                leader: Some(node("d")),
                ..beat("e", 1, false)
            },
            now: 5,
        });
        assert!(!d.lone());
    }
}
