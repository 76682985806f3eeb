//! The faults: drawn from the run's seed, one at a time with quiet gaps between, each undone
//! before the next.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, MemberAddOptions};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::{Cluster, MemberSpec, free_port};
use crate::disk::SmallDisk;
use crate::net::Net;
use crate::{DISK_RESERVE_BYTES, OP_TIMEOUT};

/// How long a membership change may take (a removal or addition retried through leader
/// changes; a learner's promotion retried until it has caught up).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

/// A fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    Kill,
    KillLeader,
    Pause,
    PauseLeader,
    Partition,
    PartitionLeader,
    PartitionLink,
    PartitionClients,
    Replace,
    DiskFull,
}

impl Fault {
    /// Every fault, in the order of [`Fault::short`]'s names.
    pub const ALL: [Fault; 10] = [
        Fault::Kill,
        Fault::KillLeader,
        Fault::Pause,
        Fault::PauseLeader,
        Fault::Partition,
        Fault::PartitionLeader,
        Fault::PartitionLink,
        Fault::PartitionClients,
        Fault::Replace,
        Fault::DiskFull,
    ];

    /// The name `--faults` takes.
    pub fn short(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause",
            Fault::PauseLeader => "pause-leader",
            Fault::Partition => "partition",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionLink => "partition-link",
            Fault::PartitionClients => "partition-clients",
            Fault::Replace => "replace",
            Fault::DiskFull => "disk-full",
        }
    }

    fn needs_net(self) -> bool {
        matches!(
            self,
            Fault::Partition
                | Fault::PartitionLeader
                | Fault::PartitionLink
                | Fault::PartitionClients
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 and restart",
            Fault::KillLeader => "kill -9 the leader and restart",
            Fault::Pause => "SIGSTOP/SIGCONT",
            Fault::PauseLeader => "SIGSTOP/SIGCONT the leader",
            Fault::Partition => "partition a minority",
            Fault::PartitionLeader => "partition the leader's minority",
            Fault::PartitionLink => "cut one link between members",
            Fault::PartitionClients => "cut a member off from clients",
            Fault::Replace => "replace a member (remove, add learner, promote)",
            Fault::DiskFull => "fill a member's disk (NOSPACE), free, disarm",
        }
    }
}

/// The cluster under faults, and what the faults changed.
pub struct Nemesis {
    pub cluster: Cluster,
    /// The private network, if the machine allows one (partitions need it).
    pub net: Option<Net>,
    /// The cluster's members now, as indexes into `cluster.members` (a replaced member's
    /// index leaves, its replacement's comes in).
    pub active: Vec<usize>,
    /// Which network slot each member index uses (a replacement takes its predecessor's).
    slot_of: HashMap<usize, usize>,
    /// Each slot's small file system, which its members' data directories are on (root only).
    disks: Vec<SmallDisk>,
    dir: PathBuf,
    rng: StdRng,
    next_name: usize,
    /// The active members' client URLs, for the clients and watchers.
    pub shared: crate::Endpoints,
    /// Faults injected, by kind.
    pub faults: BTreeMap<Fault, u64>,
    /// What went wrong while injecting them (a membership change that never completed).
    pub problems: Vec<String>,
    /// Full-disk faults whose member stopped on a failed write (restarted once the disk
    /// was freed).
    pub stopped_on_full_disk: u64,
    /// Slots whose member was removed but whose replacement never joined (its MemberAdd
    /// failed, no quorum say): the next replacement fills one rather than removing another
    /// member, so that failed replacements never shrink the cluster.
    vacant: Vec<usize>,
    /// When the faults began (each fault is logged with its time from here, to line it up
    /// with the members' logs).
    started: Instant,
}

impl Nemesis {
    pub fn new(
        cluster: Cluster,
        net: Option<Net>,
        disks: Vec<SmallDisk>,
        dir: PathBuf,
        seed: u64,
    ) -> Nemesis {
        let n = cluster.members.len();
        let nemesis = Nemesis {
            shared: std::sync::Arc::default(),
            cluster,
            net,
            active: (0..n).collect(),
            slot_of: (0..n).map(|i| (i, i)).collect(),
            disks,
            dir,
            rng: StdRng::seed_from_u64(seed),
            next_name: n + 1,
            faults: BTreeMap::new(),
            problems: Vec::new(),
            stopped_on_full_disk: 0,
            vacant: Vec::new(),
            started: Instant::now(),
        };
        nemesis.share_endpoints();
        nemesis
    }

    /// The active members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.active
            .iter()
            .map(|&i| self.cluster.members[i].spec.client_url())
            .collect()
    }

    /// Tells the clients and watchers the active members, at the URLs they use (through the
    /// client proxies, if the run has them; the nemesis and the final checks go direct).
    fn share_endpoints(&self) {
        let endpoints = self
            .active
            .iter()
            .map(|&i| {
                let spec = &self.cluster.members[i].spec;
                self.net
                    .as_ref()
                    .map_or_else(|| spec.client_url(), |net| net.client_endpoint(spec))
            })
            .collect();
        *self.shared.lock().expect("the endpoints") = endpoints;
    }

    fn gap(&mut self) -> Duration {
        Duration::from_millis(300 + self.rng.random_range(0..1_200))
    }

    /// Injects faults of the kinds `wanted` (those the machine allows) until `seconds` pass;
    /// every fault is undone when this returns.
    pub fn run(&mut self, rt: &tokio::runtime::Runtime, seconds: f64, wanted: &[Fault]) {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let kinds: Vec<Fault> = wanted
            .iter()
            .copied()
            .filter(|f| !f.needs_net() || self.net.is_some())
            .filter(|f| *f != Fault::DiskFull || !self.disks.is_empty())
            .collect();
        if kinds.is_empty() {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return;
        }
        self.started = Instant::now();
        std::thread::sleep(self.gap());
        while Instant::now() < deadline {
            let fault = kinds[self.rng.random_range(0..kinds.len())];
            if self.inject(rt, fault) {
                *self.faults.entry(fault).or_insert(0) += 1;
            }
            self.restart_the_ended();
            std::thread::sleep(self.gap());
        }
        // Proxies learn who dials whom from what passes through them: cuts that never held a
        // connection would be partitions in name only.
        let cuts: u64 = self
            .faults
            .iter()
            .filter(|(f, _)| f.needs_net())
            .map(|(_, n)| n)
            .sum();
        if let Some(Net::Proxies(proxies)) = &self.net {
            println!(
                "chaos: the proxies held a connection {} times",
                proxies.held()
            );
        }
        if let Some(Net::Proxies(proxies)) = &self.net
            && cuts > 0
            && proxies.held() == 0
        {
            self.problem(format!(
                "{cuts} partitions through the proxies held no connection"
            ));
        }
    }

    /// Records a problem for the verdict, and says it at once (with the run's elapsed
    /// faults): a later step that cannot go on (a member never ready) must not hide it.
    fn problem(&mut self, what: String) {
        let faults: u64 = self.faults.values().sum();
        eprintln!("chaos: problem after {faults} faults: {what}");
        self.problems.push(what);
    }

    /// Members whose process ended when no fault of this run ended it (a crash: a panic, a
    /// signal, an exit on an error): each is a problem, said with how it ended and its last
    /// log lines, and is started again so that the run goes on.
    fn restart_the_ended(&mut self) {
        for m in self.active.clone() {
            let Some(status) = self.cluster.exited(m) else {
                continue;
            };
            let name = self.cluster.members[m].spec.name.clone();
            let log = self.cluster.log(m);
            let lines: Vec<&str> = log.lines().collect();
            let last = lines[lines.len().saturating_sub(5)..].join(" | ");
            self.problem(format!(
                "{name} ended by itself ({status}); its log ends: {last}"
            ));
            let active = self.active.clone();
            self.cluster.restart_among(m, &active);
        }
    }

    /// One fault, held for a while and undone; false if it could not be made (no leader).
    fn inject(&mut self, rt: &tokio::runtime::Runtime, fault: Fault) -> bool {
        let held = Duration::from_millis(200 + self.rng.random_range(0..2_800));
        let any = self.active[self.rng.random_range(0..self.active.len())];
        let leader = match fault {
            Fault::KillLeader | Fault::PauseLeader | Fault::PartitionLeader => {
                match rt.block_on(leader(&self.cluster, &self.active)) {
                    Some(leader) => leader,
                    None => return false,
                }
            }
            _ => any,
        };
        eprintln!(
            "chaos: {:7.1} s: {} ({})",
            self.started.elapsed().as_secs_f64(),
            fault.short(),
            self.cluster.members[leader].spec.name
        );
        match fault {
            Fault::Kill | Fault::KillLeader => {
                self.cluster.kill(leader);
                std::thread::sleep(held);
                let active = self.active.clone();
                self.cluster.restart_among(leader, &active);
            }
            Fault::Pause | Fault::PauseLeader => {
                signal(&self.cluster, leader, "-STOP");
                std::thread::sleep(held);
                signal(&self.cluster, leader, "-CONT");
            }
            Fault::Partition | Fault::PartitionLeader => {
                // A minority (the leader in it, for PartitionLeader) cut off from the rest;
                // none with fewer than 3 members (after a replacement that failed halfway).
                if self.active.len() < 3 {
                    return false;
                }
                let size = 1 + self.rng.random_range(0..(self.active.len() - 1) / 2);
                let mut others: Vec<usize> = self
                    .active
                    .iter()
                    .copied()
                    .filter(|&m| m != leader)
                    .collect();
                others.shuffle(&mut self.rng);
                let mut minority = vec![leader];
                minority.extend(others.drain(..size - 1));
                self.cut_between(&minority, &others);
                std::thread::sleep(held);
                self.heal();
            }
            Fault::PartitionLink if self.active.len() < 2 => return false,
            Fault::PartitionLink => {
                let mut pair = self.active.clone();
                pair.shuffle(&mut self.rng);
                self.cut_between(&pair[..1], &pair[1..2]);
                std::thread::sleep(held);
                self.heal();
            }
            Fault::PartitionClients => {
                let slot = self.slot_of[&any];
                if let Some(net) = self.net.as_mut() {
                    net.cut_clients(slot);
                }
                std::thread::sleep(held);
                self.heal();
            }
            Fault::Replace => {
                let replaced = match self.vacant.pop() {
                    Some(slot) => rt.block_on(self.fill(slot)),
                    None => rt.block_on(self.replace(any)),
                };
                if let Err(e) = replaced {
                    self.problem(e);
                }
            }
            Fault::DiskFull => {
                if let Err(e) = self.disk_full(rt, any, held) {
                    self.problem(e);
                }
            }
        }
        true
    }

    /// A free port no member of the run has had (members share their slot's address with
    /// their predecessors).
    fn unused_port(&self) -> u16 {
        loop {
            let port = free_port();
            let taken = self.cluster.members.iter().any(|m| {
                m.spec.client_port == port
                    || m.spec.peer_port == port
                    || m.spec.peer_listen_port == Some(port)
            });
            if !taken {
                return port;
            }
        }
    }

    fn cut_between(&mut self, a: &[usize], b: &[usize]) {
        let Some(net) = self.net.as_mut() else {
            return;
        };
        for x in a {
            for y in b {
                net.cut(self.slot_of[x], self.slot_of[y]);
            }
        }
    }

    fn heal(&mut self) {
        if let Some(net) = self.net.as_mut() {
            net.heal();
        }
    }

    /// Replaces member `old` with a new one on the same network slot: MemberRemove, stop it,
    /// then [`fill`](Self::fill) the slot. Each step is retried (bounded) through leader
    /// changes.
    async fn replace(&mut self, old: usize) -> Result<(), String> {
        let others: Vec<String> = self
            .active
            .iter()
            .filter(|&&m| m != old)
            .map(|&m| self.cluster.members[m].spec.client_url())
            .collect();
        let c = crate::cluster::client(&others).await;
        let old_name = self.cluster.members[old].spec.name.clone();
        // Each step checks the member list first: a step whose answer was lost may have
        // been applied, and repeating it would fail (or add a second member).
        retry(&format!("remove {old_name}"), || {
            let mut c = c.clone();
            let old_name = old_name.clone();
            async move {
                let list = c.member_list().await.map_err(|e| e.to_string())?;
                let Some(id) = list
                    .members()
                    .iter()
                    .find(|m| m.name() == old_name)
                    .map(etcd_client::Member::id)
                else {
                    return Ok(());
                };
                c.member_remove(id)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        self.cluster.kill(old);
        // Its data is no one's now, and would fill its slot's small file system over a long
        // run's replacements (a 30-minute run's did, and a new member could not take its
        // snapshot).
        let _ = std::fs::remove_dir_all(&self.cluster.members[old].spec.data_dir);
        self.active.retain(|&m| m != old);
        self.share_endpoints();
        self.fill(self.slot_of[&old]).await
    }

    /// Adds a new member on `slot`, whose member was removed: MemberAdd of a learner, start
    /// it (`--initial-cluster-state existing`), MemberPromote once it has caught up. If the
    /// add fails, the slot is left vacant for the next replacement to fill.
    async fn fill(&mut self, slot: usize) -> Result<(), String> {
        let filled = self.add_learner(slot).await;
        if filled.is_err() {
            self.vacant.push(slot);
        }
        let (c, new_id, name) = filled?;
        retry(&format!("promote {name}"), || {
            let mut c = c.clone();
            async move {
                let list = c.member_list().await.map_err(|e| e.to_string())?;
                if list
                    .members()
                    .iter()
                    .any(|m| m.id() == new_id && !m.is_learner())
                {
                    return Ok(());
                }
                c.member_promote(new_id)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await
    }

    /// The MemberAdd of a learner on `slot`, and its start: a client of the cluster, the new
    /// member's id and name.
    async fn add_learner(
        &mut self,
        slot: usize,
    ) -> Result<(etcd_client::Client, u64, String), String> {
        let c = crate::cluster::client(&self.endpoints()).await;
        // A learner an earlier try added but never started (its answer lost, or the start
        // never came) would hold the learner's place: removed first. (Not one the harness
        // started, which may not have published its name yet.)
        let started: Vec<String> = self
            .active
            .iter()
            .map(|&m| self.cluster.members[m].spec.peer_url())
            .collect();
        retry("remove learners never started", || {
            let mut c = c.clone();
            let started = started.clone();
            async move {
                let list = c.member_list().await.map_err(|e| e.to_string())?;
                for m in list.members() {
                    if m.is_learner()
                        && m.name().is_empty()
                        && !m.peer_urls().iter().any(|u| started.contains(u))
                    {
                        c.member_remove(m.id()).await.map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            }
        })
        .await?;
        let name = format!("m{}", self.next_name);
        self.next_name += 1;
        let local = MemberSpec {
            client_port: self.unused_port(),
            peer_port: self.unused_port(),
            data_dir: self
                .disks
                .get(slot)
                .map_or_else(|| self.dir.join(&name), |disk| disk.path.join(&name)),
            client_scheme: self.cluster.members[self.active[0]].spec.client_scheme,
            ..MemberSpec::local(&self.dir, &name)
        };
        let spec = match self.net.as_mut() {
            Some(net) => net.spec(slot, local),
            None => local,
        };
        let peer_url = spec.peer_url();
        let new_id = retry(&format!("add {name} as a learner"), || {
            let mut c = c.clone();
            let peer_url = peer_url.clone();
            async move {
                let list = c.member_list().await.map_err(|e| e.to_string())?;
                if let Some(added) = list
                    .members()
                    .iter()
                    .find(|m| m.peer_urls().contains(&peer_url))
                {
                    return Ok(added.id());
                }
                let added = c
                    .member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
                    .await
                    .map_err(|e| e.to_string())?;
                added
                    .member()
                    .map(etcd_client::Member::id)
                    .ok_or_else(|| "MemberAdd answered no member".to_owned())
            }
        })
        .await?;
        let new = self.cluster.join_among(spec, &self.active.clone());
        self.slot_of.insert(new, slot);
        self.active.push(new);
        self.share_endpoints();
        Ok((c, new_id, name))
    }
}

impl Nemesis {
    /// Fills member `m`'s file system to half the reserve: NOSPACE must be raised (writes
    /// refused everywhere, nothing lost); after `held`, frees it and disarms the alarms as
    /// `etcdctl alarm disarm` does: writes must resume.
    fn disk_full(
        &mut self,
        rt: &tokio::runtime::Runtime,
        m: usize,
        held: Duration,
    ) -> Result<(), String> {
        let disk = &self.disks[self.slot_of[&m]];
        let name = self.cluster.members[m].spec.name.clone();
        let pid = self.cluster.pid(m);
        disk.fill_to(DISK_RESERVE_BYTES / 2);
        let endpoints = self.endpoints();
        let raised = rt.block_on(async {
            let c = crate::cluster::client(&endpoints).await;
            retry(
                &format!("see NOSPACE raised for {name}'s full disk"),
                || {
                    // The disk stays full: what the member deletes meanwhile (compacted
                    // tables, old log segments and snapshots) is taken again, or a member
                    // that freed space itself would rightly raise nothing.
                    disk.fill_to(DISK_RESERVE_BYTES / 2);
                    let mut c = c.clone();
                    let ended = pid.is_some_and(process_ended);
                    async move {
                        if ended {
                            return Ok(None);
                        }
                        let raised = alarms(&mut c).await?;
                        if raised.iter().any(|&(_, a)| a == AlarmType::Nospace) {
                            Ok(Some(raised))
                        } else {
                            Err("no NOSPACE alarm".to_owned())
                        }
                    }
                },
            )
            .await
        });
        let raised = raised.map_err(|e| {
            // What the member itself said about it (its log at the default level).
            let log = self.cluster.log(m);
            let said: Vec<&str> = log.lines().filter(|l| l.contains("NOSPACE")).collect();
            let said = said[said.len().saturating_sub(3)..].join(" | ");
            format!(
                "{e} ({} bytes free on its disk; its log: {})",
                disk.available(),
                if said.is_empty() {
                    "nothing about NOSPACE"
                } else {
                    &said
                }
            )
        });
        std::thread::sleep(held);
        disk.free();
        // The member's own writes (a flush, a compaction, log segments) may take what the
        // fill left, before NOSPACE stops the writes or while the disk is held full: it then
        // stops on the failed write, as etcd stops on a failed WAL write. Started again on
        // the freed disk, it must recover what it had; the alarms raised are disarmed below.
        let stopped = pid.is_some_and(process_ended);
        if stopped {
            let log = self.cluster.log(m);
            let last = log.lines().last().unwrap_or("").to_owned();
            let status = self
                .cluster
                .exited(m)
                .map_or_else(|| "gone".to_owned(), |s| s.to_string());
            eprintln!("chaos: {name} stopped on its full disk ({status}; {last}); restarted");
            self.stopped_on_full_disk += 1;
            self.cluster.kill(m);
            let active = self.active.clone();
            self.cluster.restart_among(m, &active);
        }
        let raised = match raised {
            Ok(Some(raised)) if !stopped => raised,
            Err(e) if !stopped => return Err(e),
            _ => rt.block_on(async {
                let c = crate::cluster::client(&endpoints).await;
                retry("list the alarms", || {
                    let mut c = c.clone();
                    async move { alarms(&mut c).await }
                })
                .await
            })?,
        };
        // What each disarm answered: the alarms it cleared (none if the alarm was not
        // raised where and when it was applied), for the report if writes do not resume.
        let mut disarmed = Vec::new();
        let resumed = rt.block_on(async {
            let c = crate::cluster::client(&endpoints).await;
            // NOSPACE only: a CORRUPT alarm stays for the run's end to report.
            let nospace = raised.into_iter().filter(|&(_, a)| a == AlarmType::Nospace);
            for (member, alarm) in nospace {
                let cleared = retry("disarm NOSPACE", || {
                    let mut c = c.clone();
                    let mut options = AlarmOptions::new();
                    options.with_member(member);
                    async move {
                        c.alarm(AlarmAction::Deactivate, alarm, Some(options))
                            .await
                            .map(|r| r.alarms().len())
                            .map_err(|e| e.to_string())
                    }
                })
                .await?;
                disarmed.push(format!("{member:x} {alarm:?}: cleared {cleared}"));
            }
            retry("put after NOSPACE was disarmed", || {
                let mut c = c.clone();
                async move {
                    c.put("chaos-probe", "writes resumed", None)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            })
            .await
        });
        resumed.map_err(|e| {
            let report = self.disk_report(rt, &endpoints);
            format!(
                "{e}; disarmed: [{}]; {report}; {}",
                disarmed.join(", "),
                second_disarm(rt, &endpoints)
            )
        })
    }

    /// What a NOSPACE that outlives its fault is made of: the alarms raised now, and each
    /// member's free space, the bytes under its data directory, and what its log last said
    /// about NOSPACE.
    fn disk_report(&self, rt: &tokio::runtime::Runtime, endpoints: &[String]) -> String {
        let now = rt.block_on(async {
            let mut c = crate::cluster::client(endpoints).await;
            alarms(&mut c).await
        });
        let mut report = format!("alarms now: {now:?}");
        for &m in &self.active {
            let spec = &self.cluster.members[m].spec;
            // The member's own view, asked of it alone: its alarms, and where its log and
            // its store are (a member whose state went its own way shows here).
            let own = rt.block_on(async {
                tokio::time::timeout(OP_TIMEOUT, async {
                    let mut c = Client::connect([spec.client_url()], None)
                        .await
                        .map_err(|e| e.to_string())?;
                    let raised = alarms(&mut c).await?;
                    let status = c.status().await.map_err(|e| e.to_string())?;
                    let header = status.header();
                    let id = header.map_or(0, |h| h.member_id());
                    let revision = header.map_or(0, |h| h.revision());
                    let (leader, term) = (status.leader(), status.raft_term());
                    let index = status.raft_index();
                    Ok::<_, String>(format!(
                        "alarms {raised:?}, id {id:x}, leader {leader:x}, term {term}, \
                         raft index {index}, revision {revision}"
                    ))
                })
                .await
                .unwrap_or_else(|_| Err("timed out".to_owned()))
            });
            report.push_str(&format!(
                "; {} says: {}",
                spec.name,
                own.unwrap_or_else(|e| format!("({e})"))
            ));
            let free = self
                .disks
                .get(self.slot_of[&m])
                .map_or_else(|| "-".to_owned(), |d| d.available().to_string());
            let log = self.cluster.log(m);
            let said: Vec<&str> = log.lines().filter(|l| l.contains("NOSPACE")).collect();
            let said = said[said.len().saturating_sub(2)..].join(" | ");
            report.push_str(&format!(
                "; {}: {free} bytes free, {} bytes in its data directory, its log: {said}",
                spec.name,
                tree_bytes(&spec.data_dir),
            ));
        }
        report
    }
}

/// After writes did not resume: disarms every alarm raised now, once, and tries one put. Says
/// what the disarm cleared and whether the put was taken (an operator's next step, and what
/// tells an alarm that a disarm misses from one raised again).
fn second_disarm(rt: &tokio::runtime::Runtime, endpoints: &[String]) -> String {
    // The timer is made inside the runtime (`block_on`), which it needs.
    let outcome = rt.block_on(async {
        tokio::time::timeout(MEMBERSHIP_TIMEOUT, async {
            let mut c = crate::cluster::client(endpoints).await;
            let mut cleared = 0;
            for (member, alarm) in alarms(&mut c).await? {
                let mut options = AlarmOptions::new();
                options.with_member(member);
                cleared += c
                    .alarm(AlarmAction::Deactivate, alarm, Some(options))
                    .await
                    .map(|r| r.alarms().len())
                    .map_err(|e| e.to_string())?;
            }
            let put = c.put("chaos-probe", "writes resumed", None).await;
            Ok::<_, String>(format!(
                "a second disarm cleared {cleared}, and a put then {}",
                match put {
                    Ok(_) => "succeeded".to_owned(),
                    Err(e) => format!("failed: {e}"),
                }
            ))
        })
        .await
    });
    match outcome {
        Ok(Ok(said)) => said,
        Ok(Err(e)) => format!("a second disarm failed: {e}"),
        Err(_) => "a second disarm timed out".to_owned(),
    }
}

/// The bytes of the files under `dir`, however deep (0 for what cannot be read).
fn tree_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// `step` until it succeeds, for at most [`MEMBERSHIP_TIMEOUT`].
async fn retry<T, F, Fut>(what: &str, mut step: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + MEMBERSHIP_TIMEOUT;
    loop {
        let last = match tokio::time::timeout(OP_TIMEOUT, step()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => "timed out".to_owned(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "membership: could not {what} in {MEMBERSHIP_TIMEOUT:?}: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The alarms raised in the cluster: (member, alarm).
async fn alarms(c: &mut etcd_client::Client) -> Result<Vec<(u64, AlarmType)>, String> {
    let alarms = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(alarms
        .alarms()
        .iter()
        .map(|a| (a.member_id(), a.alarm()))
        .collect())
}

/// Whether process `pid` has ended (gone, or a zombie its parent has not reaped yet).
fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn signal(cluster: &Cluster, member: usize, signal: &str) {
    if let Some(pid) = cluster.pid(member) {
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

/// The member that leads, as most of the active members say, if any.
async fn leader(cluster: &Cluster, active: &[usize]) -> Option<usize> {
    let mut ids = Vec::new();
    let mut votes: HashMap<u64, usize> = HashMap::new();
    for &m in active {
        let e = cluster.members[m].spec.client_url();
        let status = tokio::time::timeout(OP_TIMEOUT, async {
            let mut c = Client::connect([e.as_str()], None).await.ok()?;
            c.status().await.ok()
        })
        .await
        .ok()
        .flatten();
        ids.push((
            m,
            status
                .as_ref()
                .and_then(|s| s.header())
                .map(|h| h.member_id()),
        ));
        if let Some(s) = status
            && s.leader() != 0
        {
            *votes.entry(s.leader()).or_insert(0) += 1;
        }
    }
    let (leader, _) = votes.into_iter().max_by_key(|&(_, n)| n)?;
    ids.iter()
        .find(|(_, id)| *id == Some(leader))
        .map(|&(m, _)| m)
}
