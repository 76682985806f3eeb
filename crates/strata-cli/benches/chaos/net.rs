//! A private network for a run's members, so that links can be cut: a bridge in this
//! namespace (the clients' side, `10.213.N.1`) and one network namespace per member slot, each
//! joined to the bridge by a veth pair and listening on its own address (`10.213.N.(10 + i)`).
//! Cutting the link between two members is a blackhole route to each other's address inside
//! both namespaces (packets vanish, as in a real partition: connections hang, then time
//! out); cutting a member off from the clients is a blackhole route to the bridge's address in
//! its namespace. Needs root (CAP_NET_ADMIN) and `ip` (iproute2); where either is missing,
//! [`Namespaces::create`] says why and the run cuts links with proxies instead (`proxy.rs`).

use std::process::Command;

use crate::cluster::MemberSpec;
use crate::proxy::Proxies;

/// How a run cuts links: namespaces, or proxies where those are not available.
pub enum Net {
    Namespaces(Namespaces),
    Proxies(Proxies),
}

impl Net {
    /// The spec of a member in slot `slot`, from one on 127.0.0.1 with free ports (`local`):
    /// in the slot's namespace, or behind proxies (started here).
    pub fn spec(&mut self, slot: usize, local: MemberSpec) -> MemberSpec {
        match self {
            Net::Namespaces(ns) => MemberSpec {
                host: ns.host(slot),
                wrapper: ns.wrapper(slot),
                ..local
            },
            Net::Proxies(proxies) => {
                proxies.client(slot, local.client_port);
                MemberSpec {
                    peer_port: proxies.peer(slot, local.peer_port),
                    peer_listen_port: Some(local.peer_port),
                    ..local
                }
            }
        }
    }

    /// The URL the clients reach `spec`'s member at (through its proxy, if it has one).
    pub fn client_endpoint(&self, spec: &MemberSpec) -> String {
        match self {
            Net::Proxies(proxies) => match proxies.client_port(spec.client_port) {
                Some(port) => format!("{}://127.0.0.1:{port}", spec.client_scheme),
                None => spec.client_url(),
            },
            Net::Namespaces(_) => spec.client_url(),
        }
    }

    /// Cuts the link between slots `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize) {
        match self {
            Net::Namespaces(ns) => ns.cut(a, b),
            Net::Proxies(proxies) => proxies.cut(a, b),
        }
    }

    /// Cuts slot `slot` off from the clients (its peers still reach it).
    pub fn cut_clients(&mut self, slot: usize) {
        match self {
            Net::Namespaces(ns) => ns.cut_clients(slot),
            Net::Proxies(proxies) => proxies.cut_clients(slot),
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        match self {
            Net::Namespaces(ns) => ns.heal(),
            Net::Proxies(proxies) => proxies.heal(),
        }
    }

    /// What it is, for the run's first lines.
    pub fn describe(&self) -> &'static str {
        match self {
            Net::Namespaces(_) => "a network namespace per member",
            Net::Proxies(_) => "a proxy in front of every member's peer and client ports",
        }
    }
}

/// The namespaces, veths and bridge of one run; removed when dropped.
pub struct Namespaces {
    /// Unique per run (the process id), in every name made.
    tag: String,
    /// The third octet of the run's subnet.
    subnet: u32,
    slots: usize,
    /// The routes in place, as (namespace slot, blackholed address).
    cuts: Vec<(usize, String)>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Namespaces {
    /// Makes the bridge and `slots` namespaces.
    ///
    /// # Errors
    ///
    /// The first `ip` command that failed (then nothing is left behind).
    pub fn create(slots: usize) -> Result<Namespaces, String> {
        remove_orphans();
        let pid = std::process::id();
        let net = Namespaces {
            tag: pid.to_string(),
            subnet: 16 + pid % 224,
            slots: 0,
            cuts: Vec::new(),
        };
        let mut net = net;
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let setup = |net: &mut Namespaces| -> Result<(), String> {
            ip(&[
                "addr",
                "add",
                &format!("{}/24", net.gateway()),
                "dev",
                &bridge,
            ])?;
            ip(&["link", "set", &bridge, "up"])?;
            for slot in 0..slots {
                let ns = net.namespace(slot);
                ip(&["netns", "add", &ns])?;
                net.slots = slot + 1;
                let veth = net.veth(slot);
                ip(&[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ])?;
                ip(&["link", "set", &veth, "master", &bridge, "up"])?;
                let addr = format!("{}/24", net.host(slot));
                ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
                ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
                ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            }
            Ok(())
        };
        setup(&mut net)?;
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("chb{}", self.tag)
    }

    fn veth(&self, slot: usize) -> String {
        format!("chv{}x{slot}", self.tag)
    }

    fn namespace(&self, slot: usize) -> String {
        format!("chaos{}-{slot}", self.tag)
    }

    /// The clients' address on the bridge.
    fn gateway(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    /// Slot `slot`'s address.
    pub fn host(&self, slot: usize) -> String {
        format!("10.213.{}.{}", self.subnet, 10 + slot)
    }

    /// The command prefix that runs a program in slot `slot`'s namespace.
    pub fn wrapper(&self, slot: usize) -> Vec<String> {
        ["ip", "netns", "exec"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([self.namespace(slot)])
            .collect()
    }

    fn blackhole(&mut self, slot: usize, addr: String) {
        let ns = self.namespace(slot);
        let route = format!("{addr}/32");
        if let Err(e) = ip(&["-n", &ns, "route", "add", "blackhole", &route]) {
            panic!("cut a link: {e}");
        }
        self.cuts.push((slot, addr));
    }

    /// Cuts the link between slots `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.blackhole(a, self.host(b));
        self.blackhole(b, self.host(a));
    }

    /// Cuts slot `slot` off from the clients (its peers still reach it).
    pub fn cut_clients(&mut self, slot: usize) {
        self.blackhole(slot, self.gateway());
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        for (slot, addr) in std::mem::take(&mut self.cuts) {
            let ns = self.namespace(slot);
            let route = format!("{addr}/32");
            if let Err(e) = ip(&["-n", &ns, "route", "del", "blackhole", &route]) {
                panic!("heal a link: {e}");
            }
        }
    }
}

/// Removes what earlier runs that were killed (Ctrl-C: no drop ran) left behind: namespaces
/// and bridges whose tag (their process id) names no running process. A leftover bridge
/// could hold the subnet a new run picks.
fn remove_orphans() {
    let dead = |tag: &str| {
        tag.parse::<u32>()
            .is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let listed = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in listed(&["netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some((tag, _)) = name.strip_prefix("chaos").and_then(|r| r.split_once('-'))
            && dead(tag)
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in listed(&["-o", "link", "show", "type", "bridge"]).lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        if let Some(tag) = name.strip_prefix("chb")
            && dead(tag)
        {
            let _ = ip(&["link", "del", name]);
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and so the pair.
        for slot in 0..self.slots {
            let _ = ip(&["netns", "del", &self.namespace(slot)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
