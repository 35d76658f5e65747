//! A three-node consortium on loopback, written to a directory: identities, certificates and
//! one config per node. Used by the tests and benchmarks, and by `party-node init-local` to try
//! the node on one machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{
    ApiSection, ConfigFile, ConsortiumSection, Mode, NodeSection, PartySection, TrustMode, TrustSection, random_token,
};
use crate::identity::{self, Ca, Identity};

/// Organisation names used by the test bed, by party.
pub const NAMES: [&str; 3] = ["acme-bank", "bob-clinic", "dealer-co"];

/// Where the three nodes listen.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    /// UDP (QUIC) address per party.
    pub udp: [SocketAddr; 3],
    /// Control API address per party.
    pub api: [SocketAddr; 3],
}

/// Writes identities and configs for three nodes under `dir` (`dir/alice/node.toml`, …) and
/// returns the config paths in party order. With `ca = true`, certificates are issued by a
/// consortium CA written to `dir/ca.pem` and trust mode is `ca`; otherwise they are self-signed
/// and pinned.
pub fn write_consortium(dir: &Path, addrs: Addrs, ca: bool) -> anyhow::Result<[PathBuf; 3]> {
    let authority = if ca { Some(Ca::new("membrane-test-consortium")?) } else { None };
    write_consortium_with(dir, addrs, authority.as_ref(), NAMES)
}

/// [`write_consortium`] with a given CA (or pinned trust for `None`) and organisation names.
pub fn write_consortium_with(
    dir: &Path,
    addrs: Addrs,
    authority: Option<&Ca>,
    names: [&str; 3],
) -> anyhow::Result<[PathBuf; 3]> {
    let paths = write_mode(dir, addrs, authority, names, Mode::Dealer)?;
    Ok(paths.try_into().expect("three configs"))
}

/// A two-node consortium (`[consortium] mode = "2pc"`: alice and bob, no dealer) under `dir`;
/// the config paths of alice and bob. `addrs`' third entries are unused.
pub fn write_two_party(dir: &Path, addrs: Addrs, ca: bool) -> anyhow::Result<[PathBuf; 2]> {
    let authority = if ca { Some(Ca::new("membrane-test-consortium")?) } else { None };
    let paths = write_mode(dir, addrs, authority.as_ref(), NAMES, Mode::TwoParty)?;
    Ok(paths.try_into().expect("two configs"))
}

/// The consortium of `mode` (its roles only) under `dir`; config paths in party order.
pub fn write_mode(
    dir: &Path,
    addrs: Addrs,
    authority: Option<&Ca>,
    names: [&str; 3],
    mode: Mode,
) -> anyhow::Result<Vec<PathBuf>> {
    let ca = authority.is_some();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(a) = authority {
        std::fs::write(dir.join("ca.pem"), a.cert_pem()).context("writing ca.pem")?;
    }
    let mut certs = Vec::new();
    for &role in mode.roles() {
        let d = dir.join(role.as_str());
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        let name = names[role.party().index()];
        let id: Identity = match authority {
            Some(a) => a.issue(name)?,
            None => identity::self_signed(name)?,
        };
        identity::write_new(&d.join("node.cert.pem"), &id.cert_pem, false)?;
        identity::write_new(&d.join("node.key.pem"), &id.key_pem, true)?;
        certs.push(d.join("node.cert.pem"));
    }
    let parties: Vec<PartySection> = mode
        .roles()
        .iter()
        .map(|&r| PartySection {
            role: r,
            name: names[r.party().index()].into(),
            address: addrs.udp[r.party().index()].into(),
            cert: (!ca).then(|| PathBuf::from(format!("../{}/node.cert.pem", r.as_str()))),
        })
        .collect();
    let mut out = Vec::new();
    for &role in mode.roles() {
        let file = ConfigFile {
            node: NodeSection {
                role,
                listen: None,
                cert: "node.cert.pem".into(),
                key: "node.key.pem".into(),
                data_dir: "data".into(),
            },
            api: ApiSection { listen: addrs.api[role.party().index()], token: random_token() },
            trust: TrustSection {
                mode: if ca { TrustMode::Ca } else { TrustMode::Pinned },
                ca: ca.then(|| PathBuf::from("../ca.pem")),
            },
            consortium: ConsortiumSection { mode },
            parties: parties.clone(),
            limits: Default::default(),
            link: Default::default(),
            policy: Default::default(),
        };
        let path = dir.join(role.as_str()).join("node.toml");
        let text = toml::to_string_pretty(&file).context("serialising the config")?;
        identity::write_new(&path, &text, true)?;
        out.push(path);
    }
    Ok(out)
}

/// Free loopback ports for three nodes (bound together, then released: a small race with other
/// programs that bind ephemeral ports).
pub fn free_addrs() -> anyhow::Result<Addrs> {
    let udp: Vec<std::net::UdpSocket> =
        (0..3).map(|_| std::net::UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>().context("UDP port")?;
    let tcp: Vec<std::net::TcpListener> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>().context("TCP port")?;
    let u = |i: usize| udp[i].local_addr();
    let t = |i: usize| tcp[i].local_addr();
    Ok(Addrs { udp: [u(0)?, u(1)?, u(2)?], api: [t(0)?, t(1)?, t(2)?] })
}
